//! [`Frontend`]: the protocol-level vhost-user front-end, one method per front-end request
//! (QEMU `docs/interop/vhost-user.rst`, "Front-end message types"), every reply validated.
//!
//! Each reply is awaited with a timeout ([`FrontendOptions::reply_timeout`]), so a silent
//! back-end cannot hang us. After any failure that may leave the stream out of step (timeout,
//! malformed reply, socket error) the connection is latched broken and every later request
//! fails with [`FrontendError::Broken`] without touching the socket.
//!
//! The timeout bounds the whole reply ([`crate::connection::Connection`] turns the socket's
//! read timeout into a deadline per message): a back-end that trickles a reply a byte at a
//! time is caught after one timeout, like a silent one.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;

use super::FrontendError;

#[path = "client_inflight.rs"]
mod inflight;
use crate::connection::{Connection, ConnectionError, Message};
use crate::message::{
    ConfigAccess, ConfigSpace, Header, MemoryRegion, MemoryTable, Payload, ProtocolFeatures,
    Request, VringAddr, VringFd, VringState, FLAG_NEED_REPLY, MAX_CONFIG_SIZE, MAX_MEMORY_REGIONS,
};

/// How a [`Frontend`] talks to its back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendOptions {
    /// Longest wait for a reply (and for a blocked send) before [`FrontendError::Timeout`].
    pub reply_timeout: Duration,
}

impl Default for FrontendOptions {
    fn default() -> Self {
        FrontendOptions {
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a ring takes buffers (`SET_VRING_ENABLE`, "Ring states").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingEnable {
    /// The back-end may process the ring.
    Enabled,
    /// The back-end must not process the ring.
    Disabled,
}

/// A connected vhost-user front-end (the session's owner once [`Frontend::set_owner`] is sent).
#[derive(Debug)]
pub struct Frontend {
    conn: Connection,
    /// Protocol features acknowledged with `SET_PROTOCOL_FEATURES`.
    acked_protocol: ProtocolFeatures,
    broken: bool,
}

impl Frontend {
    /// Connects to the back-end listening at `path`, with the default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, FrontendError> {
        Self::connect_with(path, FrontendOptions::default())
    }

    /// Connects to the back-end listening at `path`.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: FrontendOptions,
    ) -> Result<Self, FrontendError> {
        let stream = UnixStream::connect(path).map_err(|e| FrontendError::Connect {
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        Self::from_stream(stream, options)
    }

    /// Uses an already connected stream socket.
    pub fn from_stream(
        stream: UnixStream,
        options: FrontendOptions,
    ) -> Result<Self, FrontendError> {
        // A zero timeout would mean "block forever" to the socket layer.
        let timeout = Some(options.reply_timeout.max(Duration::from_millis(1)));
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| FrontendError::Io {
                errno: e.raw_os_error().unwrap_or(0),
            })?;
        Ok(Frontend {
            conn: Connection::new(stream),
            acked_protocol: ProtocolFeatures::empty(),
            broken: false,
        })
    }

    /// The socket (for polling, or to check it is still open).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }

    /// The protocol features acknowledged so far (empty until
    /// [`Frontend::set_protocol_features`]).
    pub fn acked_protocol_features(&self) -> ProtocolFeatures {
        self.acked_protocol
    }

    /// True once a failure made the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    // ---- session -------------------------------------------------------------------------

    /// `SET_OWNER`: starts the session.
    pub fn set_owner(&mut self) -> Result<(), FrontendError> {
        self.command(Request::SET_OWNER, &[], &[])
    }

    /// `RESET_OWNER` (deprecated by the doc in favour of `RESET_DEVICE`).
    pub fn reset_owner(&mut self) -> Result<(), FrontendError> {
        self.command(Request::RESET_OWNER, &[], &[])
    }

    /// `RESET_DEVICE`: disables every ring and resets the device (protocol feature
    /// `RESET_DEVICE`).
    pub fn reset_device(&mut self) -> Result<(), FrontendError> {
        self.require(ProtocolFeatures::RESET_DEVICE)?;
        self.command(Request::RESET_DEVICE, &[], &[])
    }

    /// `GET_FEATURES`: the virtio feature bits the back-end offers (bit 30 is
    /// `VHOST_USER_F_PROTOCOL_FEATURES`).
    pub fn get_features(&mut self) -> Result<u64, FrontendError> {
        self.get_u64(Request::GET_FEATURES)
    }

    /// `SET_FEATURES`: acknowledges virtio feature bits.
    pub fn set_features(&mut self, features: u64) -> Result<(), FrontendError> {
        self.command(Request::SET_FEATURES, &features.to_bytes(), &[])
    }

    /// `GET_PROTOCOL_FEATURES` (only when `GET_FEATURES` offered bit 30).
    pub fn get_protocol_features(&mut self) -> Result<ProtocolFeatures, FrontendError> {
        self.get_u64(Request::GET_PROTOCOL_FEATURES)
            .map(ProtocolFeatures::from_bits_retain)
    }

    /// `SET_PROTOCOL_FEATURES`. From then on, when `REPLY_ACK` is among `features`, every
    /// request without a reply of its own is sent with NEED_REPLY and its status checked
    /// ("REPLY_ACK").
    pub fn set_protocol_features(
        &mut self,
        features: ProtocolFeatures,
    ) -> Result<(), FrontendError> {
        self.command(
            Request::SET_PROTOCOL_FEATURES,
            &features.bits().to_bytes(),
            &[],
        )?;
        self.acked_protocol = features;
        Ok(())
    }

    /// `GET_QUEUE_NUM` (protocol feature `MQ`): the most queues the back-end supports.
    pub fn get_queue_num(&mut self) -> Result<u64, FrontendError> {
        self.require(ProtocolFeatures::MQ)?;
        self.get_u64(Request::GET_QUEUE_NUM)
    }

    /// `GET_MAX_MEM_SLOTS` (protocol feature `CONFIGURE_MEM_SLOTS`).
    pub fn get_max_mem_slots(&mut self) -> Result<u64, FrontendError> {
        self.require(ProtocolFeatures::CONFIGURE_MEM_SLOTS)?;
        self.get_u64(Request::GET_MAX_MEM_SLOTS)
    }

    /// `GET_CONFIG` (protocol feature `CONFIG`): `len` bytes of config space at `offset`.
    /// The reply must describe the same window ("Virtio device config space"); an empty reply
    /// is the back-end's refusal ([`FrontendError::ConfigRefused`], the connection stays
    /// usable).
    pub fn get_config(&mut self, offset: u32, len: usize) -> Result<Vec<u8>, FrontendError> {
        self.require(ProtocolFeatures::CONFIG)?;
        if len > MAX_CONFIG_SIZE {
            return Err(FrontendError::ConfigTooLarge { len });
        }
        let request = ConfigSpace {
            offset,
            flags: ConfigAccess::Writable,
            payload: vec![0; len],
        };
        let req = Request::GET_CONFIG;
        let reply = self.call(req, &request.to_bytes(), &[], 0)?;
        if reply.is_empty() {
            // "Virtio device config space": an empty payload reports an error.
            return Err(FrontendError::ConfigRefused { offset, len });
        }
        let space = self.parse::<ConfigSpace>(req, &reply)?;
        if space.offset != offset || space.payload.len() != len {
            return Err(self.fail(FrontendError::Mismatch { request: req }));
        }
        Ok(space.payload)
    }

    /// `SET_STATUS` (protocol feature `STATUS`): the virtio device status byte.
    pub fn set_status(&mut self, status: u8) -> Result<(), FrontendError> {
        self.require(ProtocolFeatures::STATUS)?;
        self.command(Request::SET_STATUS, &u64::from(status).to_bytes(), &[])
    }

    /// `GET_STATUS` (protocol feature `STATUS`).
    pub fn get_status(&mut self) -> Result<u8, FrontendError> {
        self.require(ProtocolFeatures::STATUS)?;
        let value = self.get_u64(Request::GET_STATUS)?;
        // virtio 1.2 §2.1: the device status is one byte.
        u8::try_from(value).map_err(|_| FrontendError::BadValue {
            request: Request::GET_STATUS,
            value,
        })
    }

    // ---- memory --------------------------------------------------------------------------

    /// `SET_MEM_TABLE`: `regions[i]` is backed by `fds[i]` ("Memory regions description").
    pub fn set_mem_table(
        &mut self,
        regions: &[MemoryRegion],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), FrontendError> {
        if regions.len() > MAX_MEMORY_REGIONS || regions.len() != fds.len() {
            return Err(FrontendError::TooManyRegions {
                count: regions.len().max(fds.len()),
                max: MAX_MEMORY_REGIONS,
            });
        }
        let table = MemoryTable {
            regions: regions.to_vec(),
        };
        self.command(Request::SET_MEM_TABLE, &table.to_bytes(), fds)
    }

    // ---- rings ---------------------------------------------------------------------------

    /// `SET_VRING_NUM`: ring `index` has `num` descriptors.
    pub fn set_vring_num(&mut self, index: u32, num: u32) -> Result<(), FrontendError> {
        self.command(
            Request::SET_VRING_NUM,
            &VringState { index, num }.to_bytes(),
            &[],
        )
    }

    /// `SET_VRING_BASE`: the next available index the back-end reads.
    pub fn set_vring_base(&mut self, index: u32, base: u32) -> Result<(), FrontendError> {
        let state = VringState { index, num: base };
        self.command(Request::SET_VRING_BASE, &state.to_bytes(), &[])
    }

    /// `SET_VRING_ADDR`: the ring's parts, as front-end user addresses ("Memory access").
    pub fn set_vring_addr(&mut self, addr: &VringAddr) -> Result<(), FrontendError> {
        self.command(Request::SET_VRING_ADDR, &addr.to_bytes(), &[])
    }

    /// `SET_VRING_KICK`: the eventfd we signal when buffers are available (`None`: polling).
    pub fn set_vring_kick(
        &mut self,
        index: u8,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), FrontendError> {
        self.vring_fd(Request::SET_VRING_KICK, index, fd)
    }

    /// `SET_VRING_CALL`: the eventfd the back-end signals when buffers are used.
    pub fn set_vring_call(
        &mut self,
        index: u8,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), FrontendError> {
        self.vring_fd(Request::SET_VRING_CALL, index, fd)
    }

    /// `SET_VRING_ENABLE` (with `VHOST_USER_F_PROTOCOL_FEATURES` negotiated, rings start
    /// disabled: "Ring states").
    pub fn set_vring_enable(&mut self, index: u32, state: RingEnable) -> Result<(), FrontendError> {
        let num = u32::from(state == RingEnable::Enabled);
        self.command(
            Request::SET_VRING_ENABLE,
            &VringState { index, num }.to_bytes(),
            &[],
        )
    }

    /// `GET_VRING_BASE`: stops ring `index` and returns its next available index ("Ring
    /// states": the ring is stopped once the reply arrives).
    pub fn get_vring_base(&mut self, index: u32) -> Result<u32, FrontendError> {
        let req = Request::GET_VRING_BASE;
        let reply = self.call(req, &VringState { index, num: 0 }.to_bytes(), &[], 0)?;
        let state = self.parse::<VringState>(req, &reply)?;
        if state.index != index {
            return Err(self.fail(FrontendError::Mismatch { request: req }));
        }
        Ok(state.num)
    }

    // ---- plumbing ------------------------------------------------------------------------

    fn vring_fd(
        &mut self,
        req: Request,
        index: u8,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), FrontendError> {
        let payload = VringFd {
            index,
            no_fd: fd.is_none(),
        }
        .to_u64()
        .to_bytes();
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        self.command(req, &payload, &fds)
    }

    fn require(&self, feature: ProtocolFeatures) -> Result<(), FrontendError> {
        if self.acked_protocol.contains(feature) {
            Ok(())
        } else {
            Err(FrontendError::ProtocolFeatureMissing {
                bits: feature.bits(),
            })
        }
    }

    /// A request whose reply is a u64.
    fn get_u64(&mut self, req: Request) -> Result<u64, FrontendError> {
        let reply = self.call(req, &[], &[], 0)?;
        self.parse::<u64>(req, &reply)
    }

    /// A request without a reply of its own: with REPLY_ACK acknowledged it is sent with
    /// NEED_REPLY and the returned status checked ("REPLY_ACK": zero is success).
    fn command(
        &mut self,
        req: Request,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), FrontendError> {
        if !self.acked_protocol.contains(ProtocolFeatures::REPLY_ACK) {
            return self.send(req, payload, fds, 0);
        }
        let reply = self.call(req, payload, fds, FLAG_NEED_REPLY)?;
        match self.parse::<u64>(req, &reply)? {
            0 => Ok(()),
            status => Err(FrontendError::Refused {
                request: req,
                status,
            }),
        }
    }

    fn parse<P: Payload>(&mut self, req: Request, reply: &[u8]) -> Result<P, FrontendError> {
        P::parse(reply).map_err(|error| {
            self.fail(FrontendError::BadPayload {
                request: req,
                error,
            })
        })
    }

    /// Latches the connection broken and returns `e`.
    fn fail(&mut self, e: FrontendError) -> FrontendError {
        self.broken = true;
        e
    }

    fn send(
        &mut self,
        req: Request,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        flags: u32,
    ) -> Result<(), FrontendError> {
        if self.broken {
            return Err(FrontendError::Broken);
        }
        let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let header = Header::for_request(req, size, flags);
        self.conn
            .send(&header, payload, fds)
            .map_err(|e| self.fail(socket_error(req, e)))
    }

    /// Sends `req` and returns the payload of its validated reply (no fds allowed).
    fn call(
        &mut self,
        req: Request,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        flags: u32,
    ) -> Result<Vec<u8>, FrontendError> {
        self.send(req, payload, fds, flags)?;
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
        check_reply(req, &header, &fds).map_err(|e| self.fail(e))?;
        drop::<Vec<OwnedFd>>(fds);
        Ok(payload)
    }
}

/// The reply header must name the request, carry the REPLY flag, and come without fds
/// ("Message Specification", "Header").
fn check_reply(req: Request, header: &Header, fds: &[OwnedFd]) -> Result<(), FrontendError> {
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
    if !fds.is_empty() {
        return Err(FrontendError::UnexpectedFds {
            request: req,
            count: fds.len(),
        });
    }
    Ok(())
}

fn socket_error(request: Request, error: ConnectionError) -> FrontendError {
    match error {
        ConnectionError::Io { errno }
            if errno == Errno::AGAIN.raw_os_error() || errno == Errno::TIMEDOUT.raw_os_error() =>
        {
            FrontendError::Timeout { request }
        }
        ConnectionError::Io { errno }
            if errno == Errno::PIPE.raw_os_error() || errno == Errno::CONNRESET.raw_os_error() =>
        {
            FrontendError::Disconnected { request }
        }
        error => FrontendError::Connection { request, error },
    }
}
