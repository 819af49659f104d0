//! Device status and the initialisation sequence (virtio 1.2 §2.1 "Device Status Field",
//! §3.1.1 "Driver Requirements: Device Initialization").
//!
//! The sequence is: reset (write 0) → ACKNOWLEDGE → DRIVER → the driver writes the features
//! it accepts → FEATURES_OK (which the device refuses if the features break §2.2.1) →
//! DRIVER_OK. FAILED may be set at any time; DEVICE_NEEDS_RESET is set by the device.
//!
//! - Device side: [`StatusMachine`] validates what a driver writes to `device status` and to
//!   the driver feature bits, and answers reads.
//! - Driver side: [`DriverInit`] produces the values to write, in order, and checks what it
//!   reads back.
//!
//! ```
//! use vireo_spec::{blk, DriverInit, Features, Negotiator, SpecError, StatusMachine};
//!
//! # fn main() -> Result<(), SpecError> {
//! let rules = Negotiator::modern(blk::DEPENDENCIES);
//! let offered = Features::VERSION_1 | blk::BlkFeatures::FLUSH.to_features();
//! let mut device = StatusMachine::new(offered, rules);
//! let mut driver = DriverInit::new();
//!
//! device.write_status(driver.reset().bits())?;
//! device.write_status(driver.acknowledge()?.bits())?;
//! device.write_status(driver.driver()?.bits())?;
//! let wants = Features::all() | blk::BlkFeatures::all().to_features();
//! let accepted = driver.negotiate(device.offered(), wants, &rules)?;
//! device.write_driver_features(accepted)?;
//! device.write_status(driver.features_ok()?.bits())?;
//! driver.confirm_features_ok(device.status())?;
//! device.write_status(driver.driver_ok()?.bits())?;
//! assert!(device.is_live());
//! assert_eq!(device.negotiated(), Some(offered));
//! # Ok(())
//! # }
//! ```

use bitflags::bitflags;

use crate::features::Features;
use crate::negotiation::{NegotiationError, Negotiator};
use crate::spec_error;

mod driver;
pub use driver::DriverInit;

bitflags! {
    /// The `device status` byte (virtio 1.2 §2.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DeviceStatus: u8 {
        /// The guest OS has found the device and recognised it as a virtio device.
        const ACKNOWLEDGE = 1;
        /// The guest OS knows how to drive the device.
        const DRIVER = 2;
        /// The driver is set up and ready to drive the device.
        const DRIVER_OK = 4;
        /// Feature negotiation is complete.
        const FEATURES_OK = 8;
        /// The device has been suspended (virtio 1.3 draft §3.4, with VIRTIO_F_SUSPEND).
        const SUSPEND = 16;
        /// The device has hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 64;
        /// The driver has given up on the device.
        const FAILED = 128;
    }
}

/// The last completed step of the initialisation sequence (§3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InitStep {
    /// Just reset: status 0.
    Reset,
    /// ACKNOWLEDGE set.
    Acknowledge,
    /// DRIVER set; the driver may now write its features.
    Driver,
    /// FEATURES_OK set and accepted; features are frozen.
    FeaturesOk,
    /// DRIVER_OK set: the device is live.
    DriverOk,
}

impl InitStep {
    /// The step after this one, if any.
    pub const fn next(self) -> Option<InitStep> {
        match self {
            InitStep::Reset => Some(InitStep::Acknowledge),
            InitStep::Acknowledge => Some(InitStep::Driver),
            InitStep::Driver => Some(InitStep::FeaturesOk),
            InitStep::FeaturesOk => Some(InitStep::DriverOk),
            InitStep::DriverOk => None,
        }
    }

    /// The status bit this step sets (empty for `Reset`).
    pub const fn bit(self) -> DeviceStatus {
        match self {
            InitStep::Reset => DeviceStatus::empty(),
            InitStep::Acknowledge => DeviceStatus::ACKNOWLEDGE,
            InitStep::Driver => DeviceStatus::DRIVER,
            InitStep::FeaturesOk => DeviceStatus::FEATURES_OK,
            InitStep::DriverOk => DeviceStatus::DRIVER_OK,
        }
    }

    /// All step bits set once this step is complete.
    pub const fn status_bits(self) -> DeviceStatus {
        let bits = match self {
            InitStep::Reset => 0,
            InitStep::Acknowledge => 1,
            InitStep::Driver => 1 | 2,
            InitStep::FeaturesOk => 1 | 2 | 8,
            InitStep::DriverOk => 1 | 2 | 8 | 4,
        };
        DeviceStatus::from_bits_retain(bits)
    }
}

/// The step bits, which the driver sets in order and never clears.
const STEP_BITS: DeviceStatus = InitStep::DriverOk.status_bits();

spec_error! {
    /// Why a status or feature write, or a status read-back, breaks §2.1 / §3.1.1.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum StatusError {
        /// the status value sets bits that virtio 1.2 does not define
        UnknownBits { bits: u8 },
        /// the driver cleared a status bit; only a reset (writing 0) may clear bits
        ClearedBits { bits: DeviceStatus },
        /// a status bit was set before the steps that must come first
        OutOfOrder { at: InitStep, bits: DeviceStatus },
        /// the driver continued initialisation after FAILED; it must reset first
        AfterFailed,
        /// features may be written only after DRIVER and before FEATURES_OK
        FeaturesAtWrongStep { at: InitStep },
        /// FEATURES_OK was set before the driver chose its features
        FeaturesNotWritten,
        /// FEATURES_OK refused: the accepted features are not a valid subset of the offer
        FeaturesRefused { source: NegotiationError },
        /// the device did not keep FEATURES_OK set, so it refused the accepted features
        FeaturesOkNotKept { read_back: DeviceStatus },
        /// the device has set DEVICE_NEEDS_RESET and must be reset before it is used
        NeedsReset,
    }
}

/// What a valid status write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// 0 was written: the device must reset (§2.1, §3.1.1 step 1).
    Reset,
    /// No new bit: nothing changed.
    Unchanged,
    /// The sequence advanced to this step.
    Advanced(InitStep),
    /// The driver set FAILED.
    Failed,
}

/// Whether the device must now send a configuration change notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigNotification {
    /// DRIVER_OK was set: notify the driver (§2.1.2: "If DRIVER_OK is set, after it sets
    /// DEVICE_NEEDS_RESET, the device MUST send a device configuration change notification").
    Required,
    /// Not live yet: the driver will see the bit when it reads the status.
    NotRequired,
}

/// Device side of the status field: validates driver writes, answers reads.
#[derive(Debug, Clone)]
pub struct StatusMachine<'a> {
    step: InitStep,
    failed: bool,
    needs_reset: bool,
    offered: Features,
    accepted: Option<Features>,
    negotiated: Option<Features>,
    negotiator: Negotiator<'a>,
}

impl<'a> StatusMachine<'a> {
    /// A device that offers `offered` and checks feature subsets with `negotiator`, just reset.
    pub const fn new(offered: Features, negotiator: Negotiator<'a>) -> Self {
        StatusMachine {
            step: InitStep::Reset,
            failed: false,
            needs_reset: false,
            offered,
            accepted: None,
            negotiated: None,
            negotiator,
        }
    }

    /// The value a driver reads from `device status`.
    pub fn status(&self) -> DeviceStatus {
        let mut status = self.step.status_bits();
        status.set(DeviceStatus::FAILED, self.failed);
        status.set(DeviceStatus::DEVICE_NEEDS_RESET, self.needs_reset);
        status
    }

    /// The last completed step.
    pub const fn step(&self) -> InitStep {
        self.step
    }

    /// The features this device offers.
    pub const fn offered(&self) -> Features {
        self.offered
    }

    /// The features the driver wrote last (during the DRIVER step), if any.
    pub const fn accepted(&self) -> Option<Features> {
        self.accepted
    }

    /// The negotiated features, once FEATURES_OK has been accepted.
    pub const fn negotiated(&self) -> Option<Features> {
        self.negotiated
    }

    /// True once DRIVER_OK is set and neither FAILED nor DEVICE_NEEDS_RESET is: the device may
    /// consume buffers and notify (§2.1.2: not "before DRIVER_OK").
    pub const fn is_live(&self) -> bool {
        matches!(self.step, InitStep::DriverOk) && !self.failed && !self.needs_reset
    }

    /// Back to the state after reset (the transport's reset, or a write of 0).
    pub fn reset(&mut self) {
        *self = StatusMachine::new(self.offered, self.negotiator);
    }

    /// The device enters an error state that needs a reset (§2.1.2).
    pub fn set_needs_reset(&mut self) -> ConfigNotification {
        self.needs_reset = true;
        if self.step == InitStep::DriverOk {
            ConfigNotification::Required
        } else {
            ConfigNotification::NotRequired
        }
    }

    /// The driver writes the features it accepts (§3.1.1 step 4). Allowed only between DRIVER
    /// and FEATURES_OK; the check against the offer happens when FEATURES_OK is written.
    pub fn write_driver_features(&mut self, accepted: Features) -> Result<(), StatusError> {
        if self.failed {
            return Err(StatusError::AfterFailed);
        }
        if self.step != InitStep::Driver {
            return Err(StatusError::FeaturesAtWrongStep { at: self.step });
        }
        self.accepted = Some(accepted);
        Ok(())
    }

    /// The driver writes `value` to `device status`. On error nothing changes (and FEATURES_OK
    /// stays clear, which is how the driver learns of a refused feature set, §3.1.1 step 6).
    ///
    /// DEVICE_NEEDS_RESET in the written value is ignored (the device owns it), and so is
    /// SUSPEND (VIRTIO_F_SUSPEND is not implemented here; the 1.3 draft §3.4 says to ignore it
    /// when it cannot apply).
    pub fn write_status(&mut self, value: u8) -> Result<StatusWrite, StatusError> {
        if value == 0 {
            self.reset();
            return Ok(StatusWrite::Reset);
        }
        let unknown = value & !DeviceStatus::all().bits();
        if unknown != 0 {
            return Err(StatusError::UnknownBits { bits: unknown });
        }
        let written = DeviceStatus::from_bits_retain(value)
            .difference(DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::SUSPEND);
        let current = self.step.status_bits();
        let cleared = current.difference(written);
        let added = written.intersection(STEP_BITS).difference(current);
        if self.failed {
            return if !written.contains(DeviceStatus::FAILED) {
                Err(StatusError::ClearedBits {
                    bits: DeviceStatus::FAILED,
                })
            } else if !added.is_empty() {
                Err(StatusError::AfterFailed)
            } else {
                Ok(StatusWrite::Unchanged)
            };
        }
        if written.contains(DeviceStatus::FAILED) {
            // §3.1.1: the driver may give up at any step.
            self.failed = true;
            return Ok(StatusWrite::Failed);
        }
        if !cleared.is_empty() {
            return Err(StatusError::ClearedBits { bits: cleared });
        }
        if added.is_empty() {
            return Ok(StatusWrite::Unchanged);
        }
        if self.needs_reset {
            return Err(StatusError::NeedsReset);
        }
        let (step, negotiated) = self.advance(added)?;
        self.step = step;
        self.negotiated = negotiated;
        Ok(StatusWrite::Advanced(step))
    }

    /// Takes the steps in `added` in order, without changing `self`.
    fn advance(&self, added: DeviceStatus) -> Result<(InitStep, Option<Features>), StatusError> {
        let mut step = self.step;
        let mut negotiated = self.negotiated;
        let mut left = added;
        while !left.is_empty() {
            let next = match step.next() {
                Some(next) if left.contains(next.bit()) => next,
                _ => {
                    return Err(StatusError::OutOfOrder {
                        at: step,
                        bits: left,
                    })
                }
            };
            if next == InitStep::FeaturesOk {
                let accepted = self.accepted.ok_or(StatusError::FeaturesNotWritten)?;
                let set = self
                    .negotiator
                    .check(self.offered, accepted)
                    .map_err(|source| StatusError::FeaturesRefused { source })?;
                negotiated = Some(set);
            }
            left.remove(next.bit());
            step = next;
        }
        Ok((step, negotiated))
    }
}

#[cfg(test)]
mod tests;
