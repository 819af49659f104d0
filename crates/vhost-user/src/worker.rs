//! One thread per started queue: wait for a kick, run the device's handler with kicks
//! suppressed, signal the driver when the ring says so (virtio 1.2 §2.7.7, §2.7.10), and stop on
//! request, returning where the ring stopped.
//!
//! A queue whose driver broke a ring rule stops processing; the error is kept (the session
//! reports DEVICE_NEEDS_RESET) and the error eventfd, if any, is signalled. Other queues keep
//! working.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rustix::event::Timespec;
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{DeviceQueue, DeviceQueueError, DeviceQueueState, InflightJournal};
use vireo_queue::QueueConfig;

use crate::device::QueueHandler;

/// How the worker learns of new buffers.
#[derive(Debug, Clone)]
pub(crate) enum Kick {
    /// An eventfd the front-end writes.
    Fd(Arc<OwnedFd>),
    /// No fd: poll the ring ("invalid FD flag": "polling should be used").
    Polling,
}

/// How often a polling queue looks at its ring.
const POLL_INTERVAL: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 1_000_000,
};

/// What a worker needs.
pub(crate) struct WorkerParams {
    pub(crate) index: u16,
    pub(crate) mem: Arc<GuestMemoryMap>,
    pub(crate) config: QueueConfig,
    pub(crate) state: DeviceQueueState,
    pub(crate) kick: Kick,
    pub(crate) call: Option<Arc<OwnedFd>>,
    pub(crate) err: Option<Arc<OwnedFd>>,
    pub(crate) handler: Box<dyn QueueHandler>,
    /// Inflight tracking for this ring (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O
    /// tracking"), if negotiated and the ring has a record.
    pub(crate) inflight: Option<Resumed>,
}

/// A ring's inflight record and the heads it says to resubmit, oldest first.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) journal: Box<dyn InflightJournal>,
    pub(crate) heads: Vec<u16>,
}

/// Why a worker could not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The rings are not valid (the driver's fault: the queue is broken).
    Queue(DeviceQueueError),
    /// No eventfd or thread could be made.
    Resource(i32),
}

/// A running queue worker.
#[derive(Debug)]
pub(crate) struct Worker {
    stop: Arc<OwnedFd>,
    fault: Arc<Mutex<Option<DeviceQueueError>>>,
    thread: JoinHandle<DeviceQueueState>,
}

/// Where a stopped worker left its queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerExit {
    /// `None` when the handler panicked (a device bug): the state is unknown.
    pub(crate) state: Option<DeviceQueueState>,
    pub(crate) fault: Option<DeviceQueueError>,
}

impl Worker {
    /// Attaches to the rings and starts the thread.
    pub(crate) fn start(p: WorkerParams) -> Result<Worker, StartError> {
        let mut queue = DeviceQueue::new(&*p.mem, &p.config, p.state).map_err(StartError::Queue)?;
        if let Some(resumed) = p.inflight {
            queue
                .set_journal(resumed.journal)
                .map_err(StartError::Queue)?;
            queue.redeliver(&resumed.heads).map_err(StartError::Queue)?;
        }
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| StartError::Resource(e.raw_os_error()))?;
        let stop = Arc::new(stop);
        let fault = Arc::new(Mutex::new(None));
        let run = Run {
            queue,
            mem: p.mem,
            kick: p.kick,
            call: p.call,
            err: p.err,
            handler: p.handler,
            stop: Arc::clone(&stop),
            fault: Arc::clone(&fault),
        };
        let thread = std::thread::Builder::new()
            .name(format!("vhost-user-q{}", p.index))
            .spawn(move || run.run())
            .map_err(|e| StartError::Resource(e.raw_os_error().unwrap_or(0)))?;
        Ok(Worker {
            stop,
            fault,
            thread,
        })
    }

    /// The ring rule the driver broke, if the queue stopped for that.
    pub(crate) fn fault(&self) -> Option<DeviceQueueError> {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the thread and returns the queue's state.
    pub(crate) fn stop(self) -> WorkerExit {
        signal(&self.stop);
        let shared = Arc::clone(&self.fault);
        let read = || *shared.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = read();
        match self.thread.join() {
            Ok(state) => WorkerExit {
                state: Some(state),
                fault: read().or(fault),
            },
            Err(_) => {
                // The handler panicked: a device bug, not the driver's. The ring keeps the state
                // it last had.
                tracing::error!("queue handler panicked");
                WorkerExit { state: None, fault }
            }
        }
    }
}

/// Writes 1 to an eventfd (ignoring a full counter: the reader is woken anyway).
pub(crate) fn signal(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Drains an eventfd's counter; returns false once it reports end of file or a hard error.
fn drain(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return true,
            Err(_) => return false,
        }
    }
}

struct Run {
    queue: DeviceQueue,
    mem: Arc<GuestMemoryMap>,
    kick: Kick,
    call: Option<Arc<OwnedFd>>,
    err: Option<Arc<OwnedFd>>,
    handler: Box<dyn QueueHandler>,
    stop: Arc<OwnedFd>,
    fault: Arc<Mutex<Option<DeviceQueueError>>>,
}

enum Wake {
    Work,
    Stop,
}

impl Run {
    fn run(mut self) -> DeviceQueueState {
        // Buffers may already be waiting (made available before the kick fd was set).
        let mut wake = Wake::Work;
        loop {
            if let Wake::Stop = wake {
                break;
            }
            if let Err(e) = self.process() {
                tracing::warn!(error = %e, "queue stopped: the driver broke a ring rule");
                *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                if let Some(err) = &self.err {
                    signal(err);
                }
                // Keep the state; wait for the session to stop us.
                while !matches!(self.wait(WaitFor::StopOnly), Wake::Stop) {}
                return self.queue.state();
            }
            wake = self.wait(WaitFor::KickOrStop);
        }
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "queue broke a ring rule while stopping");
            *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
        self.queue.state()
    }

    /// Lets the handler complete in-flight requests, then publishes and notifies.
    fn finish(&mut self) -> Result<(), DeviceQueueError> {
        self.handler.drain(&mut self.queue, &self.mem)?;
        self.queue.publish_used()?;
        if self.queue.needs_notification()? {
            if let Some(call) = &self.call {
                signal(call);
            }
        }
        Ok(())
    }

    /// Runs the handler until no buffers arrived in the window where kicks were off.
    fn process(&mut self) -> Result<(), DeviceQueueError> {
        loop {
            self.queue.disable_kicks()?;
            self.handler.process(&mut self.queue, &self.mem)?;
            self.queue.publish_used()?;
            if self.queue.needs_notification()? {
                if let Some(call) = &self.call {
                    signal(call);
                }
            }
            if !self.queue.enable_kicks()? {
                return Ok(());
            }
        }
    }

    fn wait(&self, what: WaitFor) -> Wake {
        let kick = match (&self.kick, what) {
            (Kick::Fd(fd), WaitFor::KickOrStop) => Some(Arc::clone(fd)),
            _ => None,
        };
        let polling = matches!((&self.kick, what), (Kick::Polling, WaitFor::KickOrStop));
        loop {
            // Absent fds are replaced by the stop fd (no allocation per wake-up).
            let stop = self.stop.as_fd();
            let watched = kick.as_deref().map_or(stop, AsFd::as_fd);
            let completion = match what {
                WaitFor::KickOrStop => self.handler.completion_fd().unwrap_or(stop),
                WaitFor::StopOnly => stop,
            };
            let mut fds = [
                PollFd::from_borrowed_fd(stop, PollFlags::IN),
                PollFd::from_borrowed_fd(watched, PollFlags::IN),
                PollFd::from_borrowed_fd(completion, PollFlags::IN),
            ];
            let timeout = polling.then_some(&POLL_INTERVAL);
            match poll(&mut fds, timeout) {
                Ok(0) if polling => return Wake::Work,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll on a queue's eventfds failed");
                    return Wake::Stop;
                }
            }
            let ready = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
            if ready(0) {
                return Wake::Stop;
            }
            if ready(1) {
                if let Some(k) = &kick {
                    if !drain(k) {
                        tracing::warn!("kick eventfd failed; stopping the queue");
                        return Wake::Stop;
                    }
                }
                return Wake::Work;
            }
            if ready(2) {
                return Wake::Work;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum WaitFor {
    KickOrStop,
    StopOnly,
}
