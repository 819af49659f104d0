//! The back-end server: listens on a Unix socket, serves one front-end at a time, and drives a
//! [`VhostUserDevice`] for it (QEMU `docs/interop/vhost-user.rst`).
//!
//! After a front-end disconnects, every queue is stopped and the device reset; [`BackendServer::serve`]
//! then waits for the next front-end. [`StopHandle::stop`] (usable from any thread, such as one
//! that waits for SIGTERM: "Backend program conventions") ends the accept wait and the session.

mod error;
mod inflight;
mod memory;
mod session;
mod vring;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;

pub use error::{BackendError, RequestError, SessionEnd};
pub use memory::MAX_MEM_SLOTS;

use crate::connection::Connection;
use crate::device::VhostUserDevice;
use crate::message::ProtocolFeatures;
use session::{Outcome, Session};

/// The protocol features this back-end implements (a device may offer fewer).
pub const SUPPORTED_PROTOCOL_FEATURES: ProtocolFeatures = ProtocolFeatures::MQ
    .union(ProtocolFeatures::REPLY_ACK)
    .union(ProtocolFeatures::CONFIG)
    .union(ProtocolFeatures::RESET_DEVICE)
    .union(ProtocolFeatures::CONFIGURE_MEM_SLOTS)
    .union(ProtocolFeatures::STATUS)
    .union(ProtocolFeatures::INFLIGHT_SHMFD);

/// How long a served front-end may take to finish a message it started, or to read a reply.
pub const MID_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks a running server to stop: wakes its accept wait and ends its session. Cloneable and
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    fd: Arc<OwnedFd>,
}

impl StopHandle {
    /// A new, un-triggered handle.
    pub fn new() -> Result<Self, BackendError> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(StopHandle { fd: Arc::new(fd) })
    }

    /// Triggers the stop (idempotent).
    pub fn stop(&self) {
        crate::worker::signal(&self.fd);
    }

    /// True once [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        let mut fds = [PollFd::new(&*self.fd, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }
}

/// A listening vhost-user back-end.
#[derive(Debug)]
pub struct BackendServer {
    listener: UnixListener,
    path: Option<PathBuf>,
}

impl BackendServer {
    /// Listens on `path`, first removing a stale socket file there (but not any other kind of
    /// file). The socket file is removed again when the server is dropped.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        let path = path.as_ref();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(BackendError::Io {
                    errno: Errno::EXIST.raw_os_error(),
                });
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        Ok(BackendServer {
            listener,
            path: Some(path.to_path_buf()),
        })
    }

    /// Serves on an already listening socket (for example one inherited from a supervisor).
    pub fn from_listener(listener: UnixListener) -> Self {
        BackendServer {
            listener,
            path: None,
        }
    }

    /// Accepts one front-end and serves it until it disconnects.
    pub fn serve_one<D: VhostUserDevice>(
        &mut self,
        device: Arc<D>,
    ) -> Result<SessionEnd, BackendError> {
        let (stream, _) = self.listener.accept()?;
        Ok(run_session(stream, device, None))
    }

    /// Serves front-ends one after another until `stop` is triggered.
    pub fn serve<D: VhostUserDevice>(
        &mut self,
        device: Arc<D>,
        stop: &StopHandle,
    ) -> Result<(), BackendError> {
        loop {
            match wait_readable(self.listener.as_fd(), stop)? {
                Ready::Stop => return Ok(()),
                Ready::Socket => {}
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let end = run_session(stream, Arc::clone(&device), Some(stop));
            match end {
                SessionEnd::Stopped => return Ok(()),
                SessionEnd::Disconnected => tracing::info!("front-end disconnected"),
                other => tracing::warn!(end = ?other, "session ended"),
            }
        }
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Ready {
    Socket,
    Stop,
}

fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    stop: &StopHandle,
) -> Result<Ready, BackendError> {
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(fd, PollFlags::IN),
            PollFd::new(&*stop.fd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let [sock, stopped] = &fds;
        if !stopped.revents().is_empty() {
            return Ok(Ready::Stop);
        }
        if !sock.revents().is_empty() {
            return Ok(Ready::Socket);
        }
    }
}

/// Serves one connected front-end until it disconnects, a request ends the session, or `stop`
/// is triggered; then stops every queue and resets the device.
pub fn run_session<D: VhostUserDevice>(
    stream: UnixStream,
    device: Arc<D>,
    stop: Option<&StopHandle>,
) -> SessionEnd {
    if stop.is_some() {
        // Between messages the loop polls; inside one, a stalled front-end must not hold the
        // session (and the stop request) forever.
        let timeouts = stream
            .set_read_timeout(Some(MID_MESSAGE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(MID_MESSAGE_TIMEOUT)));
        if let Err(e) = timeouts {
            return SessionEnd::Broken(crate::connection::ConnectionError::Io {
                errno: e.raw_os_error().unwrap_or(0),
            });
        }
    }
    let conn = Connection::new(stream);
    let mut session = Session::new(device);
    let end = loop {
        if let Some(stop) = stop {
            match wait_readable(conn.as_fd(), stop) {
                Ok(Ready::Socket) => {}
                Ok(Ready::Stop) => break SessionEnd::Stopped,
                Err(BackendError::Io { errno }) => {
                    break SessionEnd::Broken(crate::connection::ConnectionError::Io { errno })
                }
            }
        }
        match conn.recv() {
            Ok(None) => break SessionEnd::Disconnected,
            Err(e) => break SessionEnd::Broken(e),
            Ok(Some(msg)) => match session.handle(&conn, msg) {
                Ok(Outcome::Continue) => {}
                Ok(Outcome::Close(e)) => break SessionEnd::Refused(e),
                Err(e) => break SessionEnd::Broken(e),
            },
        }
    };
    session.shutdown();
    end
}
