//! The session's side of inflight I/O tracking (QEMU `docs/interop/vhost-user.rst`,
//! "Inflight I/O tracking"): `GET_INFLIGHT_FD`, `SET_INFLIGHT_FD`, and reading a ring's record
//! when it starts.

use std::os::fd::OwnedFd;

use vireo_memory::GuestMemory;
use vireo_queue::device::DeviceQueueState;
use vireo_queue::{ordering, RingAddresses, RingFormat};
use vireo_spec::split::avail;
use vireo_spec::Features;

use super::super::inflight::InflightRegion;
use super::{Reply, Session};
use crate::backend::RequestError;
use crate::device::VhostUserDevice;
use crate::message::{Inflight, Payload, VHOST_USER_F_PROTOCOL_FEATURES};
use crate::worker::Resumed;

impl<D: VhostUserDevice> Session<D> {
    fn ring_format(&self) -> RingFormat {
        RingFormat::from_features(Features::from_bits_retain(
            self.acked & !VHOST_USER_F_PROTOCOL_FEATURES,
        ))
    }

    /// `GET_INFLIGHT_FD`: allocates a zeroed region for the queues described, keeps it (the
    /// rings record into it from their next start) and replies with it and its fd.
    pub(super) fn get_inflight_fd(&mut self, payload: &[u8]) -> Result<Reply, RequestError> {
        let request = Inflight::parse(payload)?;
        let (fd, region, reply) = InflightRegion::allocate(
            &request,
            self.ring_format(),
            self.device.num_queues(),
            self.device.max_queue_size(),
        )?;
        self.replace_inflight(region)?;
        Ok(Reply::WithFd(reply.to_bytes(), fd))
    }

    /// `SET_INFLIGHT_FD`: maps the region a front-end kept across our restart; each ring
    /// resubmits what it records when it starts.
    pub(super) fn set_inflight_fd(
        &mut self,
        payload: &[u8],
        fd: OwnedFd,
    ) -> Result<Reply, RequestError> {
        let d = Inflight::parse(payload)?;
        let region = InflightRegion::map(
            &d,
            fd,
            self.ring_format(),
            self.device.num_queues(),
            self.device.max_queue_size(),
        )?;
        self.replace_inflight(region)?;
        Ok(Reply::Ack)
    }

    /// Running rings record into the old region: stop them, switch, start them again.
    fn replace_inflight(&mut self, region: InflightRegion) -> Result<(), RequestError> {
        if region.format() == RingFormat::Packed {
            tracing::warn!(
                "inflight tracking is implemented for split rings only: requests in flight on \
                 a packed ring are lost if this back-end restarts"
            );
        }
        for v in &mut self.vrings {
            v.stop();
        }
        self.inflight = Some(region);
        self.start_ready()
    }
}

/// Reads ring `index`'s record as it starts ("When reconnecting"): heads still in flight are
/// re-delivered first, and the ring resumes after them (`used.idx` plus their number: the
/// record wins over the front-end's base). An unusable record is logged and initialised; the
/// ring then starts from the base. `None` when nothing is tracked for this ring.
pub(super) fn resume_ring(
    region: Option<&InflightRegion>,
    mem: &impl GuestMemory,
    index: u16,
    size: u16,
    addrs: &RingAddresses,
    state: &mut DeviceQueueState,
) -> Option<Resumed> {
    let mut record = region?.queue(index, size)?;
    let used_idx = state.next_used;
    let avail_idx = mem
        .translate(addrs.driver_area.saturating_add(avail::IDX as u64), 2)
        .and_then(|s| s.load_u16(0, ordering::CONSUME))
        .unwrap_or(used_idx);
    let heads = match record.recover(used_idx, avail_idx) {
        Ok(found) => {
            if let Some(next_avail) = found.next_avail {
                if next_avail != state.next_avail || !found.heads.is_empty() {
                    tracing::info!(
                        queue = index,
                        resubmit = found.heads.len(),
                        next_avail,
                        base = state.next_avail,
                        "inflight record read"
                    );
                }
                state.next_avail = next_avail;
            }
            found.heads
        }
        Err(e) => {
            tracing::warn!(queue = index, error = %e, "inflight record unusable: starting afresh");
            record.initialise(used_idx);
            Vec::new()
        }
    };
    Some(Resumed {
        journal: Box::new(record),
        heads,
    })
}
