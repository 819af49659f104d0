//! One ring's configuration as the front-end sets it, and the rule that starts it (QEMU
//! `docs/interop/vhost-user.rst`, "Ring states": a ring starts when its kick fd is set (or
//! polling is requested) and stops on `GET_VRING_BASE`; it processes buffers only while
//! enabled).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use vireo_queue::device::{DeviceQueueError, DeviceQueueState};
use vireo_queue::RingAddresses;
use vireo_queue::RingFormat;

use crate::worker::{Kick, Worker};

/// One ring.
#[derive(Debug, Default)]
pub(crate) struct Vring {
    /// `SET_VRING_NUM`.
    pub(crate) size: Option<u16>,
    /// `SET_VRING_ADDR`, translated to guest addresses.
    pub(crate) addrs: Option<RingAddresses>,
    /// `SET_VRING_BASE`, or where the ring last stopped, in the message's encoding (split: the
    /// next available index; packed: available and used positions with their wrap counters,
    /// see [`DeviceQueueState::vring_base`]).
    pub(crate) base: u32,
    /// The ring format the base is encoded for (set when the ring starts).
    pub(crate) format: RingFormat,
    /// `SET_VRING_KICK`; cleared by `GET_VRING_BASE` (the ring is stopped).
    pub(crate) kick: Option<Kick>,
    /// `SET_VRING_CALL` (none: the front-end polls).
    pub(crate) call: Option<Arc<OwnedFd>>,
    /// `SET_VRING_ERR`.
    pub(crate) err: Option<Arc<OwnedFd>>,
    /// `SET_VRING_ENABLE`.
    pub(crate) enabled: bool,
    /// The running worker.
    pub(crate) worker: Option<Worker>,
    /// The ring rule the driver broke: the ring stays stopped until it is set up again.
    pub(crate) fault: Option<DeviceQueueError>,
}

impl Vring {
    /// True when the ring may run: kicked or polling, enabled, sized and addressed, and not
    /// broken (memory is checked by the caller).
    pub(crate) fn ready(&self) -> bool {
        self.worker.is_none()
            && self.fault.is_none()
            && self.kick.is_some()
            && self.enabled
            && self.size.is_some()
            && self.addrs.is_some()
    }

    /// Stops the worker, if any, keeping where it stopped and why.
    pub(crate) fn stop(&mut self) -> Option<DeviceQueueState> {
        let exit = self.worker.take()?.stop();
        if let Some(state) = exit.state {
            self.base = state.vring_base(self.format);
        }
        if exit.fault.is_some() {
            self.fault = exit.fault;
        }
        exit.state
    }

    /// The driver's broken rule, whether the worker is still running or not.
    pub(crate) fn current_fault(&self) -> Option<DeviceQueueError> {
        self.fault
            .or_else(|| self.worker.as_ref().and_then(Worker::fault))
    }
}
