//! How one side of the loopback wakes the other.

use std::sync::{Condvar, Mutex};

/// A one-way wake-up channel (a kick from driver to device, or a call from device to driver).
pub trait Notifier: Send + Sync {
    /// Wakes the other side (or records the wake-up if it is not waiting yet).
    fn notify(&self);
    /// Waits until notified (returns at once if a notification is pending), consuming it.
    fn wait(&self);
}

/// Never sleeps: `wait` only hints the CPU and returns, so both sides poll.
#[derive(Debug, Default)]
pub struct PollingNotifier;

impl Notifier for PollingNotifier {
    fn notify(&self) {}
    fn wait(&self) {
        core::hint::spin_loop();
    }
}

/// A sticky flag behind a mutex and condition variable (for tests; the CLI uses eventfds).
#[derive(Debug, Default)]
pub struct CondvarNotifier {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Notifier for CondvarNotifier {
    fn notify(&self) {
        if let Ok(mut p) = self.pending.lock() {
            *p = true;
            self.cv.notify_one();
        }
    }
    fn wait(&self) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        while !*p {
            match self.cv.wait(p) {
                Ok(g) => p = g,
                Err(_) => return,
            }
        }
        *p = false;
    }
}
