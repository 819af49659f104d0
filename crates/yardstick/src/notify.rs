//! Notifiers: busy polling, or an eventfd pair (what a VMM's ioeventfd and irqfd are).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::event::{eventfd, EventfdFlags};
use vireo_queue::loopback::{Notifier, NotifyMode, PollingNotifier};

use crate::YardstickError;

/// An eventfd used as a one-way notifier: `notify` writes 1, `wait` blocks in read(2).
#[derive(Debug)]
pub struct EventFdNotifier(OwnedFd);

impl EventFdNotifier {
    /// A new eventfd (counter 0, blocking).
    pub fn new() -> Result<Self, YardstickError> {
        eventfd(0, EventfdFlags::CLOEXEC)
            .map(EventFdNotifier)
            .map_err(YardstickError::EventFd)
    }
}

impl Notifier for EventFdNotifier {
    fn notify(&self) {
        // A failed write leaves the waiter asleep only if the counter overflowed, which
        // needs 2^64 - 1 pending notifications; nothing to do about it here.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
    fn wait(&self) {
        let mut b = [0u8; 8];
        loop {
            match rustix::io::read(&self.0, &mut b) {
                Err(rustix::io::Errno::INTR) => continue,
                // Any other outcome returns: the caller re-checks the ring anyway.
                _ => return,
            }
        }
    }
}

/// A (kick, call) pair of notifiers: kick wakes the device, call wakes the driver.
pub type NotifierPair = (Arc<dyn Notifier>, Arc<dyn Notifier>);

/// How idle sides wait: the notifier pair (kick, call) and the loop mode that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// Both sides poll.
    Poll,
    /// Both sides sleep on eventfds when idle.
    EventFd,
}

impl NotifyKind {
    /// The loop mode for this kind.
    pub fn mode(self) -> NotifyMode {
        match self {
            NotifyKind::Poll => NotifyMode::Poll,
            NotifyKind::EventFd => NotifyMode::Block,
        }
    }

    /// A fresh (kick, call) pair.
    pub fn pair(self) -> Result<NotifierPair, YardstickError> {
        Ok(match self {
            NotifyKind::Poll => (Arc::new(PollingNotifier), Arc::new(PollingNotifier)),
            NotifyKind::EventFd => (
                Arc::new(EventFdNotifier::new()?),
                Arc::new(EventFdNotifier::new()?),
            ),
        })
    }
}
