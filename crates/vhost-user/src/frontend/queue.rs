//! [`UserQueue`]: one driver-side virtqueue of a [`super::UserDevice`] with its kick and call
//! eventfds (QEMU `docs/interop/vhost-user.rst`, `SET_VRING_KICK`, `SET_VRING_CALL`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use vireo_queue::driver::{BufferSegment, DriverQueue, DriverQueueError, UsedBuffer};

use super::FrontendError;

/// Whether a wait for a used-buffer notification saw one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallWait {
    /// The back-end signalled the call eventfd (the counter is consumed).
    Called,
    /// The timeout passed without a signal.
    TimedOut,
}

/// A driver-side queue with the eventfds shared with the back-end.
#[derive(Debug)]
pub struct UserQueue<T> {
    index: u16,
    queue: DriverQueue<T>,
    kick: OwnedFd,
    call: OwnedFd,
}

/// A fresh eventfd: `CLOEXEC`, and non-blocking so that reading an unsignalled one returns.
pub(crate) fn new_eventfd() -> Result<OwnedFd, FrontendError> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

impl<T> UserQueue<T> {
    pub(crate) fn new(index: u16, queue: DriverQueue<T>, kick: OwnedFd, call: OwnedFd) -> Self {
        UserQueue {
            index,
            queue,
            kick,
            call,
        }
    }

    /// The queue's index in the device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The ring.
    pub fn queue(&self) -> &DriverQueue<T> {
        &self.queue
    }

    /// The ring, to add buffers and pop used ones directly.
    pub fn queue_mut(&mut self) -> &mut DriverQueue<T> {
        &mut self.queue
    }

    /// The call eventfd (for a caller that polls several queues at once).
    pub fn call_fd(&self) -> BorrowedFd<'_> {
        self.call.as_fd()
    }

    /// The kick eventfd.
    pub fn kick_fd(&self) -> BorrowedFd<'_> {
        self.kick.as_fd()
    }

    fn queue_error(&self, error: DriverQueueError) -> FrontendError {
        FrontendError::Queue {
            index: self.index,
            error,
        }
    }

    /// Adds a buffer (see [`DriverQueue::add`]); not visible to the device until
    /// [`UserQueue::notify`].
    pub fn add(
        &mut self,
        readable: &[BufferSegment],
        writable: &[BufferSegment],
        token: T,
    ) -> Result<(), FrontendError> {
        self.queue
            .add(readable, writable, token)
            .map_err(|e| self.queue_error(e))
    }

    /// Publishes what was added and kicks the back-end if the ring asks for it (virtio 1.2
    /// §2.7.13.4). Returns whether a kick was sent.
    pub fn notify(&mut self) -> Result<bool, FrontendError> {
        let needed = self.queue.kick_prepare().map_err(|e| self.queue_error(e))?;
        if needed {
            self.kick()?;
        }
        Ok(needed)
    }

    /// The next used buffer, `Ok(None)` when there is none; a used entry that breaks a ring
    /// rule is [`FrontendError::Queue`] (and the queue stays broken until reset).
    pub fn pop_used(&mut self) -> Result<Option<UsedBuffer<T>>, FrontendError> {
        self.queue.pop_used().map_err(|e| self.queue_error(e))
    }

    /// Signals the kick eventfd unconditionally.
    pub fn kick(&self) -> Result<(), FrontendError> {
        loop {
            match rustix::io::write(&self.kick, &1u64.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                // The counter is saturated: the back-end has a kick pending anyway.
                Err(Errno::AGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `timeout` for the back-end to signal the call eventfd, consuming the signal.
    pub fn wait_call(&self, timeout: Duration) -> Result<CallWait, FrontendError> {
        // A timeout past what the clock can represent waits without a deadline.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.take_call()? {
                return Ok(CallWait::Called);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(CallWait::TimedOut);
            }
            let ts = left.map(|left| Timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: left.subsec_nanos().into(),
            });
            let mut fds = [PollFd::new(&self.call, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Consumes a pending call signal without waiting; `true` if there was one.
    pub fn take_call(&self) -> Result<bool, FrontendError> {
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(&self.call, &mut buf) {
                Ok(_) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vireo_memory::OwnedRegion;
    use vireo_queue::driver::{required_size, DriverQueueOptions};
    use vireo_queue::RingFormat;
    use vireo_spec::Features;

    fn queue() -> UserQueue<u16> {
        let options = DriverQueueOptions::default();
        let len = required_size(RingFormat::Split, 8, Features::VERSION_1, &options);
        let area = OwnedRegion::new_area(len).unwrap();
        let q = DriverQueue::new(area, 0x1000, 8, Features::VERSION_1, options).unwrap();
        UserQueue::new(0, q, new_eventfd().unwrap(), new_eventfd().unwrap())
    }

    #[test]
    fn a_timeout_past_the_clock_waits_without_a_deadline() {
        let q = queue();
        let call = q.call_fd().try_clone_to_owned().unwrap();
        let signaller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            rustix::io::write(&call, &1u64.to_ne_bytes()).unwrap();
        });
        // `Instant::now() + Duration::MAX` would panic; this waits for the signal instead.
        assert_eq!(q.wait_call(Duration::MAX).unwrap(), CallWait::Called);
        signaller.join().unwrap();
        assert_eq!(
            q.wait_call(Duration::from_millis(10)).unwrap(),
            CallWait::TimedOut
        );
        assert_eq!(q.wait_call(Duration::ZERO).unwrap(), CallWait::TimedOut);
    }
}
