//! Driver side of the initialisation sequence (virtio 1.2 §3.1.1).

use super::{DeviceStatus, InitStep, StatusError};
use crate::features::Features;
use crate::negotiation::Negotiator;

/// Drives the initialisation sequence from the driver side: each step returns the value to
/// write to `device status` (or the features to write) and refuses to run out of order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInit {
    step: InitStep,
    failed: bool,
    features: Option<Features>,
    features_confirmed: bool,
}

impl Default for DriverInit {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverInit {
    /// Starts the sequence; the first value to write is [`DriverInit::reset`]'s (0).
    pub const fn new() -> Self {
        DriverInit {
            step: InitStep::Reset,
            failed: false,
            features: None,
            features_confirmed: false,
        }
    }

    /// The status this driver has written so far.
    pub fn status(&self) -> DeviceStatus {
        let mut status = self.step.status_bits();
        status.set(DeviceStatus::FAILED, self.failed);
        status
    }

    /// The last completed step.
    pub const fn step(&self) -> InitStep {
        self.step
    }

    /// The negotiated features, once the device has kept FEATURES_OK.
    pub fn negotiated(&self) -> Option<Features> {
        self.features.filter(|_| self.features_confirmed)
    }

    /// Step 1: reset. Returns the value to write (0).
    pub fn reset(&mut self) -> DeviceStatus {
        *self = DriverInit::new();
        DeviceStatus::empty()
    }

    fn take(&mut self, next: InitStep) -> Result<DeviceStatus, StatusError> {
        if self.failed {
            return Err(StatusError::AfterFailed);
        }
        if self.step.next() != Some(next) {
            return Err(StatusError::OutOfOrder {
                at: self.step,
                bits: next.bit(),
            });
        }
        self.step = next;
        Ok(self.status())
    }

    /// Step 2: ACKNOWLEDGE. Returns the value to write.
    pub fn acknowledge(&mut self) -> Result<DeviceStatus, StatusError> {
        self.take(InitStep::Acknowledge)
    }

    /// Step 3: DRIVER. Returns the value to write.
    pub fn driver(&mut self) -> Result<DeviceStatus, StatusError> {
        self.take(InitStep::Driver)
    }

    /// Step 4: from the device's `offered` features and what the driver `wants`, choose the
    /// features to write (the largest valid subset, [`Negotiator::select`]).
    pub fn negotiate(
        &mut self,
        offered: Features,
        wants: Features,
        negotiator: &Negotiator<'_>,
    ) -> Result<Features, StatusError> {
        if self.failed {
            return Err(StatusError::AfterFailed);
        }
        if self.step != InitStep::Driver {
            return Err(StatusError::FeaturesAtWrongStep { at: self.step });
        }
        let set = negotiator
            .select(offered, wants)
            .map_err(|source| StatusError::FeaturesRefused { source })?;
        self.features = Some(set);
        Ok(set)
    }

    /// Step 5: FEATURES_OK. Returns the value to write.
    pub fn features_ok(&mut self) -> Result<DeviceStatus, StatusError> {
        if !self.failed && self.step == InitStep::Driver && self.features.is_none() {
            return Err(StatusError::FeaturesNotWritten);
        }
        self.take(InitStep::FeaturesOk)
    }

    /// Step 6: check the status read back after FEATURES_OK. If the device cleared
    /// FEATURES_OK it does not support the subset (the driver should then [`fail`]).
    ///
    /// [`fail`]: DriverInit::fail
    pub fn confirm_features_ok(
        &mut self,
        read_back: DeviceStatus,
    ) -> Result<Features, StatusError> {
        if self.failed {
            return Err(StatusError::AfterFailed);
        }
        if self.step != InitStep::FeaturesOk {
            return Err(StatusError::OutOfOrder {
                at: self.step,
                bits: DeviceStatus::FEATURES_OK,
            });
        }
        if read_back.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
            return Err(StatusError::NeedsReset);
        }
        match self.features {
            Some(set) if read_back.contains(DeviceStatus::FEATURES_OK) => {
                self.features_confirmed = true;
                Ok(set)
            }
            _ => Err(StatusError::FeaturesOkNotKept { read_back }),
        }
    }

    /// Step 8: DRIVER_OK, after device-specific setup. Returns the value to write.
    pub fn driver_ok(&mut self) -> Result<DeviceStatus, StatusError> {
        if !self.failed && self.step == InitStep::FeaturesOk && !self.features_confirmed {
            return Err(StatusError::OutOfOrder {
                at: self.step,
                bits: DeviceStatus::DRIVER_OK,
            });
        }
        self.take(InitStep::DriverOk)
    }

    /// Give up on the device (allowed at any step). Returns the value to write; only
    /// [`DriverInit::reset`] continues from here.
    pub fn fail(&mut self) -> DeviceStatus {
        self.failed = true;
        self.status()
    }
}
