//! [`Frontend::get_inflight_fd`] and [`Frontend::set_inflight_fd`]: the inflight region a
//! back-end records into, kept by the front-end across a back-end restart (QEMU
//! `docs/interop/vhost-user.rst`, "Inflight I/O tracking", protocol feature `INFLIGHT_SHMFD`).

use std::os::fd::{BorrowedFd, OwnedFd};

use super::{socket_error, Frontend};
use crate::connection::Message;
use crate::frontend::FrontendError;
use crate::message::{Header, Inflight, Payload, ProtocolFeatures, Request};

impl Frontend {
    /// `GET_INFLIGHT_FD`: asks the back-end for a region tracking `num_queues` queues of
    /// `queue_size` descriptors. Returns the region's fd and its description (size and offset
    /// in the fd); keep both and send them back with [`Self::set_inflight_fd`] after a
    /// reconnect. The reply must carry exactly one fd and describe the queues asked for, with
    /// a non-zero size.
    pub fn get_inflight_fd(
        &mut self,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<(OwnedFd, Inflight), FrontendError> {
        self.require(ProtocolFeatures::INFLIGHT_SHMFD)?;
        let req = Request::GET_INFLIGHT_FD;
        let request = Inflight {
            num_queues,
            queue_size,
            ..Inflight::default()
        };
        self.send(req, &request.to_bytes(), &[], 0)?;
        let msg = match self.conn.recv() {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(self.fail(FrontendError::Disconnected { request: req })),
            Err(e) => return Err(self.fail(socket_error(req, e))),
        };
        let Message {
            header,
            payload,
            fds,
        } = msg;
        check_header(req, &header).map_err(|e| self.fail(e))?;
        let count = fds.len();
        let mut fds = fds.into_iter();
        let fd = match (fds.next(), fds.next()) {
            (Some(fd), None) => fd,
            (None, _) => return Err(self.fail(FrontendError::MissingFd { request: req })),
            (Some(_), Some(_)) => {
                return Err(self.fail(FrontendError::UnexpectedFds {
                    request: req,
                    count,
                }))
            }
        };
        let reply = self.parse::<Inflight>(req, &payload)?;
        if reply.num_queues != num_queues || reply.queue_size != queue_size {
            return Err(self.fail(FrontendError::Mismatch { request: req }));
        }
        if reply.mmap_size == 0 {
            return Err(self.fail(FrontendError::BadValue {
                request: req,
                value: 0,
            }));
        }
        Ok((fd, reply))
    }

    /// `SET_INFLIGHT_FD`: gives a (restarted) back-end the region an earlier
    /// [`Self::get_inflight_fd`] returned, so that it resubmits what it records as in flight.
    pub fn set_inflight_fd(
        &mut self,
        inflight: &Inflight,
        fd: BorrowedFd<'_>,
    ) -> Result<(), FrontendError> {
        self.require(ProtocolFeatures::INFLIGHT_SHMFD)?;
        self.command(Request::SET_INFLIGHT_FD, &inflight.to_bytes(), &[fd])
    }
}

/// The reply header must name the request and carry the REPLY flag ("Message Specification",
/// "Header"); the fds are checked by the caller.
fn check_header(req: Request, header: &Header) -> Result<(), FrontendError> {
    if header.request != req as u32 {
        return Err(FrontendError::WrongReply {
            request: req,
            got: header.request,
        });
    }
    if !header.is_reply() {
        return Err(FrontendError::NotAReply {
            request: req,
            flags: header.flags,
        });
    }
    Ok(())
}
