//! Framing over a Unix stream socket: one message is exactly one header and `size` payload bytes,
//! with at most [`MAX_FDS`] file descriptors in the ancillary data (QEMU
//! `docs/interop/vhost-user.rst`, "Message Specification" and "Communication").
//!
//! Received descriptors are [`OwnedFd`]s from the moment they arrive (`MSG_CMSG_CLOEXEC`), so
//! whatever happens to the message afterwards, they are closed when dropped: nothing leaks. They
//! are also made non-blocking on arrival (see [`Message::fds`]).
//!
//! When the socket has a read (write) timeout, it bounds the whole message, not each read
//! (write): a peer that trickles a message a byte at a time cannot stretch one `recv` (`send`)
//! past the timeout. Past it, the call fails with `Io { errno: ETIMEDOUT }`.

use core::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::message::{Header, MessageError, HEADER_SIZE};

/// Most file descriptors one message may carry ("Back-end communication": "at most 8").
pub const MAX_FDS: usize = 8;

/// Why a message could not be received or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionError {
    /// Socket operation failed.
    Io {
        /// The OS error number.
        errno: i32,
    },
    /// Peer closed the connection in the middle of a message.
    Truncated {
        /// Bytes of the message received.
        got: usize,
        /// Bytes the message needed.
        expected: usize,
    },
    /// Message carries more file descriptors than allowed.
    TooManyFds {
        /// How many arrived (at least).
        count: usize,
    },
    /// Message header is invalid.
    Message(MessageError),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Io { errno } => write!(f, "socket operation failed (errno {errno})"),
            ConnectionError::Truncated { got, expected } => {
                write!(
                    f,
                    "peer closed the connection after {got} of {expected} message bytes"
                )
            }
            ConnectionError::TooManyFds { count } => {
                write!(
                    f,
                    "message carries {count} file descriptors, more than {MAX_FDS}"
                )
            }
            ConnectionError::Message(e) => write!(f, "message header is invalid: {e}"),
        }
    }
}

impl std::error::Error for ConnectionError {}

impl From<Errno> for ConnectionError {
    fn from(e: Errno) -> Self {
        ConnectionError::Io {
            errno: e.raw_os_error(),
        }
    }
}

impl From<MessageError> for ConnectionError {
    fn from(e: MessageError) -> Self {
        ConnectionError::Message(e)
    }
}

/// Makes a received descriptor non-blocking (`O_NONBLOCK`), so that no later read or write on
/// it can block this process: a peer could otherwise hand over a blocking eventfd with its
/// counter at the maximum (a write of 1 then blocks forever) or a pipe it never drains. The
/// flag is shared with the peer's own copy; QEMU's eventfds are non-blocking already, and it
/// means nothing to `mmap`. A descriptor that refuses the flag is left as it is (the request
/// it comes with decides whether it is usable).
fn set_nonblocking(fd: BorrowedFd<'_>) {
    if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
        if !flags.contains(rustix::fs::OFlags::NONBLOCK) {
            let _ = rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK);
        }
    }
}

/// One received message: header, payload bytes (exactly `header.size`), and descriptors.
#[derive(Debug)]
pub struct Message {
    /// The checked header.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
    /// Descriptors from the ancillary data (closed when dropped), each set `O_NONBLOCK` on
    /// arrival.
    pub fds: Vec<OwnedFd>,
}

/// A vhost-user connection (either side).
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
}

impl Connection {
    /// Wraps a connected stream socket.
    pub fn new(stream: UnixStream) -> Self {
        Connection { stream }
    }

    /// The socket, for polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Receives one message. `Ok(None)` means the peer closed the connection between messages.
    /// With a socket read timeout, the whole message must arrive within it.
    pub fn recv(&self) -> Result<Option<Message>, ConnectionError> {
        let deadline = self.deadline(self.stream.read_timeout());
        let mut fds = Vec::new();
        let mut head = [0u8; HEADER_SIZE];
        let got = self.read_full(&mut head, &mut fds, deadline)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_SIZE {
            return Err(ConnectionError::Truncated {
                got,
                expected: HEADER_SIZE,
            });
        }
        let header = Header::parse(&head)?;
        let size = header.size as usize;
        let mut payload = vec![0u8; size];
        let got = self.read_full(&mut payload, &mut fds, deadline)?;
        if got < size {
            let expected = HEADER_SIZE + size;
            return Err(ConnectionError::Truncated {
                got: HEADER_SIZE + got,
                expected,
            });
        }
        Ok(Some(Message {
            header,
            payload,
            fds,
        }))
    }

    /// When a call started now must end, given the socket's timeout (`None`: no bound).
    fn deadline(&self, timeout: std::io::Result<Option<Duration>>) -> Option<Instant> {
        // A timeout too large for the clock is no bound at all.
        timeout
            .ok()
            .flatten()
            .and_then(|t| Instant::now().checked_add(t))
    }

    /// Waits until the socket is ready for `flags` or `deadline` passes (`ETIMEDOUT`); without
    /// a deadline, until it is ready (a socket set non-blocking behaves like a blocking one).
    fn wait_ready(
        &self,
        flags: PollFlags,
        deadline: Option<Instant>,
    ) -> Result<(), ConnectionError> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Errno::TIMEDOUT.into());
            }
            let ts = left.map(|left| Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.stream, flags)];
            match poll(&mut fds, ts.as_ref()) {
                // Ready, hung up or in error: the next socket call tells which.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until `buf` is full or the peer closes; returns the bytes read. Descriptors
    /// arriving with any part are appended to `fds` (at most [`MAX_FDS`] in all). With a
    /// `deadline`, each read waits only until then.
    fn read_full(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<usize, ConnectionError> {
        let mut done = 0;
        let flags = match deadline {
            Some(_) => RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            None => RecvFlags::CMSG_CLOEXEC,
        };
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(rest)];
            let res = match recvmsg(&self.stream, &mut iov, &mut control, flags) {
                Ok(res) => res,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    self.wait_ready(PollFlags::IN, deadline)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = msg {
                    fds.extend(received.inspect(|fd| set_nonblocking(fd.as_fd())));
                }
            }
            if res.flags.contains(ReturnFlags::CTRUNC) {
                // The kernel closed what did not fit; ours close when `fds` drops.
                return Err(ConnectionError::TooManyFds {
                    count: fds.len() + 1,
                });
            }
            if fds.len() > MAX_FDS {
                return Err(ConnectionError::TooManyFds { count: fds.len() });
            }
            if res.bytes == 0 {
                break;
            }
            done += res.bytes;
        }
        Ok(done)
    }

    /// Sends one message: `header`, then `payload` (whose length must be `header.size`), with
    /// `fds` in the ancillary data of the first part. With a socket write timeout, the whole
    /// message must be sent within it.
    pub fn send(
        &self,
        header: &Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ConnectionError> {
        if fds.len() > MAX_FDS {
            return Err(ConnectionError::TooManyFds { count: fds.len() });
        }
        let deadline = self.deadline(self.stream.write_timeout());
        let flags = match deadline {
            Some(_) => SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            None => SendFlags::NOSIGNAL,
        };
        let head = header.to_bytes();
        let total = HEADER_SIZE.saturating_add(payload.len());
        let mut sent = 0;
        while sent < total {
            let (h, p) = match head.get(sent..) {
                Some(h) => (h, payload),
                None => (
                    &[][..],
                    payload.get(sent - HEADER_SIZE..).unwrap_or_default(),
                ),
            };
            let iov = [IoSlice::new(h), IoSlice::new(p)];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if sent == 0 && !fds.is_empty() {
                control.push(SendAncillaryMessage::ScmRights(fds));
            }
            match sendmsg(&self.stream, &iov, &mut control, flags) {
                Ok(0) => {
                    return Err(ConnectionError::Io {
                        errno: Errno::PIPE.raw_os_error(),
                    })
                }
                Ok(n) => sent += n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => self.wait_ready(PollFlags::OUT, deadline)?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::message::{Payload, Request, VringState};
    use std::io::Write;

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Connection::new(a), b)
    }

    #[test]
    fn message_split_across_writes_is_reassembled_with_its_fds() {
        let (conn, mut peer) = pair();
        let payload = VringState { index: 1, num: 256 }.to_bytes();
        let header = Header::for_request(Request::SET_VRING_NUM, 8, 0).to_bytes();
        // Header in two pieces, payload byte by byte, an fd on the second piece.
        peer.write_all(&header[..5]).unwrap();
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let side = Connection::new(peer.try_clone().unwrap());
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [efd.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let iov = [IoSlice::new(&header[5..])];
        sendmsg(side.as_fd(), &iov, &mut control, SendFlags::empty()).unwrap();
        for b in &payload {
            peer.write_all(std::slice::from_ref(b)).unwrap();
        }
        let m = conn.recv().unwrap().unwrap();
        assert_eq!(m.header.request, Request::SET_VRING_NUM as u32);
        assert_eq!(
            VringState::parse(&m.payload).unwrap(),
            VringState { index: 1, num: 256 }
        );
        assert_eq!(m.fds.len(), 1);
    }

    #[test]
    fn eof_between_messages_and_inside_one() {
        let (conn, peer) = pair();
        drop(peer);
        assert!(conn.recv().unwrap().is_none());

        let (conn, mut peer) = pair();
        peer.write_all(&Header::for_request(Request::SET_FEATURES, 8, 0).to_bytes())
            .unwrap();
        peer.write_all(&[0; 3]).unwrap();
        drop(peer);
        assert_eq!(
            conn.recv().unwrap_err(),
            ConnectionError::Truncated {
                got: HEADER_SIZE + 3,
                expected: HEADER_SIZE + 8
            }
        );

        let (conn, mut peer) = pair();
        peer.write_all(&[1, 0, 0]).unwrap();
        drop(peer);
        assert!(matches!(
            conn.recv(),
            Err(ConnectionError::Truncated { got: 3, .. })
        ));
    }

    #[test]
    fn send_and_recv_round_trip_with_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Connection::new(a), Connection::new(b));
        let efds: Vec<_> = (0..MAX_FDS)
            .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap())
            .collect();
        let borrowed: Vec<_> = efds.iter().map(|f| f.as_fd()).collect();
        let header = Header::for_request(Request::SET_MEM_TABLE, 4, 0);
        a.send(&header, &[1, 2, 3, 4], &borrowed).unwrap();
        let m = b.recv().unwrap().unwrap();
        assert_eq!(
            (m.header, m.payload.as_slice(), m.fds.len()),
            (header, &[1, 2, 3, 4][..], 8)
        );
        let nine: Vec<_> = borrowed.iter().chain(borrowed.first()).copied().collect();
        assert_eq!(
            a.send(&header, &[0; 4], &nine),
            Err(ConnectionError::TooManyFds { count: 9 })
        );
    }

    #[test]
    fn read_timeout_bounds_a_whole_trickled_message() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let timeout = Duration::from_millis(200);
        a.set_read_timeout(Some(timeout)).unwrap();
        let conn = Connection::new(a);
        let header = Header::for_request(Request::SET_FEATURES, 8, 0).to_bytes();
        // One byte every 50 ms: each read alone is well inside the timeout, the message is not.
        let writer = std::thread::spawn(move || {
            for b in header.iter().chain(&[0u8; 8]) {
                if peer.write_all(std::slice::from_ref(b)).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peer
        });
        let start = Instant::now();
        let err = conn.recv().unwrap_err();
        let took = start.elapsed();
        assert_eq!(
            err,
            ConnectionError::Io {
                errno: Errno::TIMEDOUT.raw_os_error()
            }
        );
        assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
        drop(writer.join().unwrap());
    }

    #[test]
    fn without_a_timeout_a_trickled_message_still_arrives() {
        let (conn, mut peer) = pair();
        let header = Header::for_request(Request::SET_FEATURES, 8, 0).to_bytes();
        let writer = std::thread::spawn(move || {
            for b in header.iter().chain(&7u64.to_ne_bytes()) {
                peer.write_all(std::slice::from_ref(b)).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            peer
        });
        let m = conn.recv().unwrap().unwrap();
        assert_eq!(u64::parse(&m.payload).unwrap(), 7);
        drop(writer.join().unwrap());
    }

    #[test]
    fn write_timeout_bounds_a_send_to_a_peer_that_never_reads() {
        let (a, _peer) = UnixStream::pair().unwrap();
        let timeout = Duration::from_millis(200);
        a.set_write_timeout(Some(timeout)).unwrap();
        let conn = Connection::new(a);
        let payload = vec![0u8; crate::message::MAX_PAYLOAD];
        let header = Header::for_request(Request::SET_CONFIG, payload.len() as u32, 0);
        let start = Instant::now();
        // The socket buffer fills after some messages; then the send must give up in time.
        let err = (0..10_000)
            .find_map(|_| conn.send(&header, &payload, &[]).err())
            .unwrap();
        assert_eq!(
            err,
            ConnectionError::Io {
                errno: Errno::TIMEDOUT.raw_os_error()
            }
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn received_fds_are_made_non_blocking() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Connection::new(a), Connection::new(b));
        // A blocking eventfd at its maximum count: a write of 1 would block forever.
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&efd, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes()).unwrap();
        let header = Header::for_request(Request::SET_VRING_CALL, 8, 0);
        a.send(&header, &0u64.to_bytes(), &[efd.as_fd()]).unwrap();
        let m = b.recv().unwrap().unwrap();
        let fd = m.fds.first().unwrap();
        let flags = rustix::fs::fcntl_getfl(fd).unwrap();
        assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
        assert_eq!(
            rustix::io::write(fd, &1u64.to_ne_bytes()),
            Err(Errno::AGAIN)
        );
    }

    #[test]
    fn a_non_blocking_socket_without_timeout_waits_for_the_message() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let conn = Connection::new(a);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let header = Header::for_request(Request::SET_FEATURES, 8, 0).to_bytes();
            peer.write_all(&header[..7]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(&header[7..]).unwrap();
            peer.write_all(&9u64.to_ne_bytes()).unwrap();
            peer
        });
        let m = conn.recv().unwrap().unwrap();
        assert_eq!(u64::parse(&m.payload).unwrap(), 9);
        drop(writer.join().unwrap());
    }

    #[test]
    fn more_fds_than_room_in_one_send_is_refused() {
        let (conn, peer) = pair();
        let efds: Vec<_> = (0..12)
            .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap())
            .collect();
        let borrowed: Vec<_> = efds.iter().map(|f| f.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(12))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        let header = Header::for_request(Request::SET_OWNER, 0, 0).to_bytes();
        sendmsg(
            &peer,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert!(matches!(
            conn.recv(),
            Err(ConnectionError::TooManyFds { .. })
        ));
    }
}
