//! One front-end's session: the request handlers (QEMU `docs/interop/vhost-user.rst`,
//! "Front-end message types").

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use vireo_memory::GuestMemory;
use vireo_queue::device::DeviceQueueState;
use vireo_queue::{ordering, QueueConfig, RingAddresses, RingFormat};
use vireo_spec::split::{used, MAX_QUEUE_SIZE};
use vireo_spec::Features;

use super::inflight::InflightRegion;
use super::memory::{Memory, MAX_MEM_SLOTS};
use super::vring::Vring;
use super::{RequestError, SUPPORTED_PROTOCOL_FEATURES};
use crate::connection::{Connection, ConnectionError, Message};
use crate::device::VhostUserDevice;
use crate::message::{
    ConfigSpace, MemoryTable, Payload, ProtocolFeatures, Request, SingleRegion, VringAddr, VringFd,
    VringState, VHOST_USER_F_PROTOCOL_FEATURES,
};
use crate::worker::{signal, Kick, StartError, Worker, WorkerParams};

/// virtio 1.2 §2.1 "Device Status Field": DEVICE_NEEDS_RESET.
const DEVICE_NEEDS_RESET: u64 = 64;

/// What a handled request answers.
enum Reply {
    /// Nothing, or a REPLY_ACK zero if asked.
    Ack,
    /// An explicit reply body.
    Body(Vec<u8>),
    /// A reply body with one fd (`GET_INFLIGHT_FD`).
    WithFd(Vec<u8>, OwnedFd),
}

/// What the session loop does next.
pub(crate) enum Outcome {
    /// Read the next message.
    Continue,
    /// Close the connection: a request failed and the front-end cannot be told.
    Close(RequestError),
}

/// The back-end's state for one connected front-end.
pub(crate) struct Session<D: VhostUserDevice> {
    device: Arc<D>,
    offered: u64,
    acked: u64,
    offered_protocol: ProtocolFeatures,
    protocol: ProtocolFeatures,
    memory: Memory,
    vrings: Vec<Vring>,
    status: u64,
    /// `GET_INFLIGHT_FD` / `SET_INFLIGHT_FD` (see `session_inflight.rs`).
    inflight: Option<InflightRegion>,
}

impl<D: VhostUserDevice> Session<D> {
    pub(crate) fn new(device: Arc<D>) -> Self {
        let offered = device.features() | VHOST_USER_F_PROTOCOL_FEATURES;
        let offered_protocol = device.protocol_features() & SUPPORTED_PROTOCOL_FEATURES;
        let vrings = (0..device.num_queues()).map(|_| Vring::default()).collect();
        Session {
            device,
            offered,
            acked: 0,
            offered_protocol,
            protocol: ProtocolFeatures::empty(),
            memory: Memory::default(),
            vrings,
            status: 0,
            inflight: None,
        }
    }

    /// Handles one message and sends its reply, if any.
    pub(crate) fn handle(
        &mut self,
        conn: &Connection,
        msg: Message,
    ) -> Result<Outcome, ConnectionError> {
        let Message {
            header,
            payload,
            fds,
        } = msg;
        let request = Request::from_code(header.request);
        let result = match request {
            Some(r) => self.dispatch(r, &payload, fds),
            None => Err(RequestError::Unsupported {
                code: header.request,
            }),
        };
        let ack = header.needs_reply() && self.protocol.contains(ProtocolFeatures::REPLY_ACK);
        match result {
            Ok(Reply::Body(body)) => {
                conn.send(&header.reply(body.len() as u32), &body, &[])?;
            }
            Ok(Reply::WithFd(body, fd)) => {
                conn.send(&header.reply(body.len() as u32), &body, &[fd.as_fd()])?;
            }
            Ok(Reply::Ack) => {
                if ack {
                    conn.send(&header.reply(8), &0u64.to_bytes(), &[])?;
                }
            }
            Err(e) => {
                let name = request.map_or("unknown", Request::name);
                tracing::warn!(request = name, code = header.request, error = %e, "request refused");
                if request == Some(Request::GET_CONFIG) {
                    // "vhost-user back-end uses zero length of payload to indicate an error".
                    conn.send(&header.reply(0), &[], &[])?;
                } else if ack && !request.is_some_and(has_reply_body) {
                    conn.send(&header.reply(8), &1u64.to_bytes(), &[])?;
                } else {
                    return Ok(Outcome::Close(e));
                }
            }
        }
        Ok(Outcome::Continue)
    }

    /// Stops every queue and resets the device (end of session).
    pub(crate) fn shutdown(&mut self) {
        for v in &mut self.vrings {
            v.stop();
        }
        self.device.reset();
    }

    fn dispatch(
        &mut self,
        req: Request,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, RequestError> {
        use Request as R;
        let takes_fds = matches!(
            req,
            R::SET_MEM_TABLE
                | R::ADD_MEM_REG
                | R::REM_MEM_REG
                | R::SET_VRING_KICK
                | R::SET_VRING_CALL
                | R::SET_VRING_ERR
                | R::SET_INFLIGHT_FD
        );
        if !takes_fds && !fds.is_empty() {
            return Err(RequestError::UnexpectedFds { count: fds.len() });
        }
        let needs = |protocol: ProtocolFeatures, f: ProtocolFeatures| {
            if protocol.contains(f) {
                Ok(())
            } else {
                Err(RequestError::NotNegotiated { code: req as u32 })
            }
        };
        let p = self.protocol;
        match req {
            R::GET_FEATURES => {
                empty(payload)?;
                Ok(body(self.offered))
            }
            R::SET_FEATURES => self.set_features(u64::parse(payload)?),
            R::GET_PROTOCOL_FEATURES => {
                empty(payload)?;
                Ok(body(self.offered_protocol.bits()))
            }
            R::SET_PROTOCOL_FEATURES => {
                let bits = u64::parse(payload)?;
                let extra = bits & !self.offered_protocol.bits();
                if extra != 0 {
                    return Err(RequestError::ProtocolFeaturesNotOffered { bits: extra });
                }
                self.protocol = ProtocolFeatures::from_bits_retain(bits);
                Ok(Reply::Ack)
            }
            R::SET_OWNER => empty(payload).map(|()| Reply::Ack),
            R::RESET_OWNER => {
                // Deprecated; "use it to disable all rings".
                empty(payload)?;
                for v in &mut self.vrings {
                    v.stop();
                    v.enabled = false;
                }
                Ok(Reply::Ack)
            }
            R::SET_MEM_TABLE => {
                let table = MemoryTable::parse(payload)?;
                self.change_memory(|m| m.set_table(&table.regions, fds))
            }
            R::ADD_MEM_REG => {
                needs(p, ProtocolFeatures::CONFIGURE_MEM_SLOTS)?;
                let r = SingleRegion::parse(payload)?;
                let fd = exactly_one(fds)?;
                self.change_memory(|m| m.add(&r.region, fd))
            }
            R::REM_MEM_REG => {
                needs(p, ProtocolFeatures::CONFIGURE_MEM_SLOTS)?;
                let r = SingleRegion::parse(payload)?;
                // "the back-end MAY accept messages with one file descriptor ... MUST close it".
                if fds.len() > 1 {
                    return Err(RequestError::WrongFdCount {
                        expected: 0,
                        actual: fds.len(),
                    });
                }
                drop(fds);
                self.change_memory(|m| m.remove(&r.region))
            }
            R::GET_MAX_MEM_SLOTS => {
                needs(p, ProtocolFeatures::CONFIGURE_MEM_SLOTS)?;
                empty(payload)?;
                Ok(body(MAX_MEM_SLOTS as u64))
            }
            R::SET_VRING_NUM => self.set_vring_num(VringState::parse(payload)?),
            R::SET_VRING_ADDR => self.set_vring_addr(VringAddr::parse(payload)?),
            R::SET_VRING_BASE => {
                let s = VringState::parse(payload)?;
                // Split: the next available index (16 bits). Packed: QEMU's encoding of both
                // positions and wrap counters (bits 0-14 avail, 15 its wrap, 16-30 used, 31 its
                // wrap); `from_vring_base` refuses what no ring of that format can be at.
                let format = RingFormat::from_features(Features::from_bits_retain(self.acked));
                DeviceQueueState::from_vring_base(format, s.num).ok_or(
                    RequestError::ValueOutOfRange {
                        value: s.num.into(),
                    },
                )?;
                let v = self.vring(s.index)?;
                v.stop();
                v.base = s.num;
                v.format = format;
                // Setting a ring up again forgets an earlier fault (the driver was reset).
                v.fault = None;
                self.start_ready()?;
                Ok(Reply::Ack)
            }
            R::GET_VRING_BASE => {
                let s = VringState::parse(payload)?;
                let v = self.vring(s.index)?;
                v.stop();
                v.kick = None;
                let reply = VringState {
                    index: s.index,
                    num: v.base,
                };
                Ok(Reply::Body(reply.to_bytes()))
            }
            R::SET_VRING_KICK | R::SET_VRING_CALL | R::SET_VRING_ERR => {
                self.set_vring_fd(req, VringFd::from_u64(u64::parse(payload)?), fds)
            }
            R::SET_VRING_ENABLE => {
                let s = VringState::parse(payload)?;
                let enable = match s.num {
                    0 => false,
                    1 => true,
                    n => return Err(RequestError::ValueOutOfRange { value: n.into() }),
                };
                let index = self.index(s.index)?;
                if let Some(v) = self.vrings.get_mut(index) {
                    v.enabled = enable;
                    if !enable {
                        v.stop();
                    }
                }
                self.start_ready()?;
                Ok(Reply::Ack)
            }
            R::GET_QUEUE_NUM => {
                empty(payload)?;
                Ok(body(u64::from(self.device.num_queues())))
            }
            R::GET_CONFIG => {
                needs(p, ProtocolFeatures::CONFIG)?;
                let mut c = ConfigSpace::parse(payload)?;
                self.device.read_config(c.offset, &mut c.payload)?;
                Ok(Reply::Body(c.to_bytes()))
            }
            R::SET_CONFIG => {
                needs(p, ProtocolFeatures::CONFIG)?;
                let c = ConfigSpace::parse(payload)?;
                self.device.write_config(c.offset, &c.payload, c.flags)?;
                Ok(Reply::Ack)
            }
            R::RESET_DEVICE => {
                needs(p, ProtocolFeatures::RESET_DEVICE)?;
                empty(payload)?;
                self.reset_device();
                Ok(Reply::Ack)
            }
            R::SET_STATUS => {
                needs(p, ProtocolFeatures::STATUS)?;
                let status = u64::parse(payload)?;
                if status > 0xff {
                    return Err(RequestError::ValueOutOfRange { value: status });
                }
                self.status = status & !DEVICE_NEEDS_RESET;
                if status == 0 {
                    // virtio 1.2 §2.1: writing 0 resets the device.
                    self.reset_device();
                }
                Ok(Reply::Ack)
            }
            R::GET_STATUS => {
                needs(p, ProtocolFeatures::STATUS)?;
                empty(payload)?;
                let broken = self.vrings.iter().any(|v| v.current_fault().is_some());
                Ok(body(
                    self.status | if broken { DEVICE_NEEDS_RESET } else { 0 },
                ))
            }
            R::GET_INFLIGHT_FD => {
                needs(p, ProtocolFeatures::INFLIGHT_SHMFD)?;
                self.get_inflight_fd(payload)
            }
            R::SET_INFLIGHT_FD => {
                needs(p, ProtocolFeatures::INFLIGHT_SHMFD)?;
                let fd = exactly_one(fds)?;
                self.set_inflight_fd(payload, fd)
            }
            other => Err(RequestError::Unsupported { code: other as u32 }),
        }
    }

    fn set_features(&mut self, bits: u64) -> Result<Reply, RequestError> {
        let extra = bits & !self.offered;
        if extra != 0 {
            return Err(RequestError::FeaturesNotOffered { bits: extra });
        }
        self.acked = bits;
        self.device
            .set_features(bits & !VHOST_USER_F_PROTOCOL_FEATURES);
        if bits & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            // "Ring states": without protocol features rings start enabled.
            for v in &mut self.vrings {
                v.enabled = true;
            }
            self.start_ready()?;
        }
        Ok(Reply::Ack)
    }

    fn set_vring_num(&mut self, s: VringState) -> Result<Reply, RequestError> {
        let max = self.device.max_queue_size().min(MAX_QUEUE_SIZE);
        let format = RingFormat::from_features(Features::from_bits_retain(self.acked));
        // virtio 1.2 §2.7 (split: a power of two) and §2.8 (packed: any size), both ≤ 32768.
        let valid = s.num != 0
            && s.num <= u32::from(max)
            && (format == RingFormat::Packed || s.num.is_power_of_two());
        if !valid {
            return Err(RequestError::VringSize { size: s.num, max });
        }
        let v = self.vring(s.index)?;
        v.stop();
        v.size = u16::try_from(s.num).ok();
        // Setting a ring up again forgets an earlier fault (the driver was reset).
        v.fault = None;
        self.start_ready()?;
        Ok(Reply::Ack)
    }

    fn set_vring_addr(&mut self, a: VringAddr) -> Result<Reply, RequestError> {
        let index = self.index(a.index)?;
        // The addresses are front-end user addresses ("Memory access").
        let addrs = RingAddresses {
            desc_table: self.memory.user_to_guest(a.desc)?,
            driver_area: self.memory.user_to_guest(a.avail)?,
            device_area: self.memory.user_to_guest(a.used)?,
        };
        if let Some(v) = self.vrings.get_mut(index) {
            v.stop();
            v.addrs = Some(addrs);
            v.fault = None;
        }
        self.start_ready()?;
        Ok(Reply::Ack)
    }

    fn set_vring_fd(
        &mut self,
        req: Request,
        vfd: VringFd,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, RequestError> {
        let index = self.index(u32::from(vfd.index))?;
        let fd = if vfd.no_fd {
            if !fds.is_empty() {
                return Err(RequestError::WrongFdCount {
                    expected: 0,
                    actual: fds.len(),
                });
            }
            None
        } else {
            Some(Arc::new(exactly_one(fds)?))
        };
        let Some(v) = self.vrings.get_mut(index) else {
            return Err(RequestError::VringIndex {
                index: index as u32,
                num_queues: 0,
            });
        };
        // The worker holds the old fds: stop it, then restart with the new ones.
        v.stop();
        match req {
            Request::SET_VRING_KICK => v.kick = Some(fd.map_or(Kick::Polling, Kick::Fd)),
            Request::SET_VRING_CALL => v.call = fd,
            _ => v.err = fd,
        }
        self.start_ready()?;
        Ok(Reply::Ack)
    }

    /// Applies a memory change with every queue stopped (workers hold the old map), then
    /// restarts them on the new map (or on the old one, if the change was refused).
    fn change_memory(
        &mut self,
        change: impl FnOnce(&mut Memory) -> Result<(), RequestError>,
    ) -> Result<Reply, RequestError> {
        for v in &mut self.vrings {
            v.stop();
        }
        let result = change(&mut self.memory);
        self.start_ready()?;
        result.map(|()| Reply::Ack)
    }

    fn reset_device(&mut self) {
        for v in &mut self.vrings {
            v.stop();
            *v = Vring::default();
        }
        self.acked = 0;
        self.status = 0;
        self.device.reset();
    }

    /// Starts every ring that is ready ("Ring states").
    fn start_ready(&mut self) -> Result<(), RequestError> {
        if self.memory.is_empty() {
            return Ok(());
        }
        let features = Features::from_bits_retain(self.acked & !VHOST_USER_F_PROTOCOL_FEATURES);
        let mem = self.memory.guest();
        for (index, v) in self.vrings.iter_mut().enumerate() {
            if !v.ready() {
                continue;
            }
            let (Some(size), Some(addrs), Some(kick)) = (v.size, v.addrs, v.kick.clone()) else {
                continue;
            };
            let index = index as u16;
            let config = QueueConfig {
                size,
                addrs,
                features,
            };
            let format = RingFormat::from_features(features);
            v.format = format;
            let Some(mut state) = DeviceQueueState::from_vring_base(format, v.base) else {
                return Err(RequestError::ValueOutOfRange {
                    value: v.base.into(),
                });
            };
            // Split: the base carries only the available index; the used index lives in guest
            // memory and only the device writes it, so resume from there.
            if format == RingFormat::Split {
                state.next_used = mem
                    .translate(addrs.device_area.saturating_add(used::IDX as u64), 2)
                    .and_then(|s| s.load_u16(0, ordering::FIELD))
                    .unwrap_or(0);
            }
            let inflight = if self.protocol.contains(ProtocolFeatures::INFLIGHT_SHMFD) {
                inflight_glue::resume_ring(
                    self.inflight.as_ref(),
                    &*mem,
                    index,
                    size,
                    &addrs,
                    &mut state,
                )
            } else {
                None
            };
            let params = WorkerParams {
                index,
                mem: Arc::clone(&mem),
                config,
                state,
                inflight,
                kick,
                call: v.call.clone(),
                err: v.err.clone(),
                handler: self.device.queue_handler(index),
            };
            match Worker::start(params) {
                Ok(w) => v.worker = Some(w),
                Err(StartError::Queue(e)) => {
                    tracing::warn!(queue = index, error = %e, "queue cannot start: ring invalid");
                    v.fault = Some(e);
                    if let Some(err) = &v.err {
                        signal(err);
                    }
                }
                Err(StartError::Resource(errno)) => return Err(RequestError::Resource { errno }),
            }
        }
        Ok(())
    }

    fn index(&self, index: u32) -> Result<usize, RequestError> {
        let num_queues = self.device.num_queues();
        if index < u32::from(num_queues) && (index as usize) < self.vrings.len() {
            Ok(index as usize)
        } else {
            Err(RequestError::VringIndex { index, num_queues })
        }
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring, RequestError> {
        let num_queues = self.device.num_queues();
        self.vrings
            .get_mut(index as usize)
            .ok_or(RequestError::VringIndex { index, num_queues })
    }
}

/// Requests whose reply has its own body (the "Communication" list, plus the other getters).
fn has_reply_body(r: Request) -> bool {
    use Request as R;
    matches!(
        r,
        R::GET_FEATURES
            | R::GET_PROTOCOL_FEATURES
            | R::GET_VRING_BASE
            | R::GET_QUEUE_NUM
            | R::GET_CONFIG
            | R::GET_MAX_MEM_SLOTS
            | R::GET_STATUS
            | R::GET_INFLIGHT_FD
    )
}

fn body(v: u64) -> Reply {
    Reply::Body(v.to_bytes())
}

fn empty(payload: &[u8]) -> Result<(), RequestError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(RequestError::Message(
            crate::message::MessageError::WrongSize {
                expected: 0,
                actual: payload.len(),
            },
        ))
    }
}

fn exactly_one(fds: Vec<OwnedFd>) -> Result<OwnedFd, RequestError> {
    let actual = fds.len();
    let mut it = fds.into_iter();
    match (it.next(), it.next()) {
        (Some(fd), None) => Ok(fd),
        _ => Err(RequestError::WrongFdCount {
            expected: 1,
            actual,
        }),
    }
}

#[path = "session_inflight.rs"]
mod inflight_glue;

#[cfg(test)]
#[path = "session_model.rs"]
mod model;
