//! Parsing one chain into a virtio-blk request (virtio 1.2 §5.2.6), and every rule that turns
//! a bad one into a status instead of I/O.
//!
//! A request is `struct virtio_blk_req`: a 16-byte device-readable header, data, and a 1-byte
//! device-writable status last. The device does not assume how the driver framed it into
//! descriptors (virtio 1.2 §2.7.4 "Message Framing"): the header is the first 16 readable
//! bytes, whatever descriptors hold them, and the status is the last writable byte.
//!
//! Rules, each answered with a status (the chain is used, the image untouched):
//! - fewer than 16 readable bytes (a short header): IOERR;
//! - data in the wrong direction (readable data for a read, writable data besides the status
//!   for a write, a flush or a discard): IOERR;
//! - a read or write that is not a whole number of sectors, starts or ends beyond the
//!   capacity, overflows, or has more than `seg_max` data segments: IOERR;
//! - a write, discard or write zeroes on a read-only device (virtio 1.2 §5.2.6.2): IOERR;
//! - a discard or write-zeroes payload that is not whole 16-byte segments, or a segment beyond
//!   `max_*_sectors` or the capacity: IOERR; more segments than `max_*_seg`, a discard with
//!   flags, a write zeroes with reserved flags (virtio 1.2 §5.2.6.2): UNSUPP;
//! - a command whose feature was not negotiated, or an unknown type: UNSUPP.
//!
//! A chain without a writable byte has nowhere to put a status: it is used with length 0.

use vireo_memory::{GuestMemory, SharedSlice};
use vireo_queue::device::{ChainReader, DeviceQueueError, Direction};
use vireo_spec::blk::{BlkFeatures, BlkStatus, DiscardSegment, RequestHeader, RequestType};
use vireo_spec::blk::{ID_BYTES, SECTOR_SIZE};

use super::config::Limits;
use crate::storage::ZeroesMode;

/// Size of the request header.
const HEADER_LEN: usize = 16;
/// Size of one discard / write-zeroes segment.
const RANGE_LEN: u64 = 16;

/// A data buffer, by guest address (the I/O thread translates it again in its own map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buf {
    pub(crate) addr: u64,
    pub(crate) len: u32,
}

/// What the storage is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoOp {
    /// Fill the data buffers from `offset`.
    Read { offset: u64 },
    /// Write the data buffers at `offset`.
    Write { offset: u64 },
    /// Make completed writes durable.
    Flush,
    /// Discard a range.
    Discard { offset: u64, len: u64 },
    /// Zero a range.
    WriteZeroes {
        offset: u64,
        len: u64,
        mode: ZeroesMode,
    },
}

/// What to do with a parsed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write this status (the request is refused, or there is nothing to do).
    Answer(BlkStatus),
    /// `VIRTIO_BLK_T_GET_ID`: write the serial into the writable data buffers.
    GetId,
    /// Storage I/O on the data buffers in [`Scratch::data`].
    Io(IoOp),
}

/// A parsed chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed<'m> {
    /// The status byte: its guest address and its bytes (`None`: no writable byte).
    pub(crate) status: Option<(u64, SharedSlice<'m>)>,
    /// The used length to report: every writable byte, the status last (virtio 1.2 §2.7.8.2:
    /// the device writes from the first writable byte on).
    pub(crate) used_len: u32,
    /// What to do.
    pub(crate) action: Action,
}

/// What the parser needs to know about the device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub(crate) limits: Limits,
    /// The features the driver acknowledged.
    pub(crate) acked: BlkFeatures,
}

/// Which of the scratch lists holds the data of the last parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataSide {
    Readable,
    Writable,
}

/// Reusable buffers for parsing (allocated once per queue: no allocation per request).
#[derive(Debug)]
pub(crate) struct Scratch {
    readable: Vec<Buf>,
    writable: Vec<Buf>,
    cap: usize,
    side: DataSide,
}

impl Scratch {
    /// Room for `seg_max` data segments plus the one holding the status.
    pub(crate) fn new(seg_max: u32) -> Self {
        let cap = usize::try_from(seg_max).unwrap_or(1024).saturating_add(1);
        Scratch {
            readable: Vec::with_capacity(cap),
            writable: Vec::with_capacity(cap),
            cap,
            side: DataSide::Readable,
        }
    }

    /// The data buffers of the last parsed request.
    pub(crate) fn data(&self) -> &[Buf] {
        match self.side {
            DataSide::Readable => &self.readable,
            DataSide::Writable => &self.writable,
        }
    }
}

/// Totals of one walk over a chain.
#[derive(Debug, Default)]
struct Walk {
    header: [u8; HEADER_LEN],
    header_len: usize,
    readable_data: u64,
    writable: u64,
    /// More segments than the scratch lists hold.
    overflow: bool,
    /// The header could not be copied (a device bug: the slice was validated).
    unreadable: bool,
}

/// Walks `chain` once and decides what the request is. A ring violation is returned as the
/// error; everything else is an [`Action`].
pub(crate) fn parse<'m, M: GuestMemory>(
    chain: ChainReader<'_, 'm, M>,
    mem: &'m M,
    ctx: &Context,
    scratch: &mut Scratch,
) -> Result<Parsed<'m>, DeviceQueueError> {
    scratch.readable.clear();
    scratch.writable.clear();
    scratch.side = DataSide::Readable;
    let mut walk = Walk::default();
    let mut last: Option<(u64, SharedSlice<'m>)> = None;
    for seg in chain {
        let seg = seg?;
        let len = seg.slice.len();
        match seg.direction {
            Direction::DeviceReadable => {
                let want = (HEADER_LEN - walk.header_len).min(len);
                if want > 0 {
                    let dst = walk.header.get_mut(walk.header_len..walk.header_len + want);
                    let copied = dst.is_some_and(|dst| seg.slice.read(0, dst).is_ok());
                    walk.unreadable |= !copied;
                    walk.header_len += want;
                }
                let rest = len - want;
                if rest > 0 {
                    walk.readable_data += rest as u64;
                    push(
                        &mut scratch.readable,
                        scratch.cap,
                        &mut walk.overflow,
                        seg.addr + want as u64,
                        rest,
                    );
                }
            }
            Direction::DeviceWritable if len > 0 => {
                walk.writable += len as u64;
                push(
                    &mut scratch.writable,
                    scratch.cap,
                    &mut walk.overflow,
                    seg.addr,
                    len,
                );
                last = Some((seg.addr, seg.slice));
            }
            Direction::DeviceWritable => {}
        }
    }
    let Some((last_addr, last_slice)) = last else {
        return Ok(Parsed {
            status: None,
            used_len: 0,
            action: Action::Answer(BlkStatus::IoErr),
        });
    };
    // The status is the last writable byte; take it off the data.
    let tail = last_slice.len() - 1;
    let Ok(status_slice) = last_slice.subslice(tail, 1) else {
        // Cannot happen (the slice is at least one byte long); no status can be written.
        return Ok(Parsed {
            status: None,
            used_len: 0,
            action: Action::Answer(BlkStatus::IoErr),
        });
    };
    if let Some(b) = scratch.writable.last_mut() {
        b.len -= 1;
        if b.len == 0 {
            scratch.writable.pop();
        }
    }
    let answer = |action| Parsed {
        status: Some((last_addr + tail as u64, status_slice)),
        used_len: u32::try_from(walk.writable).unwrap_or(u32::MAX),
        action,
    };
    let action = decide(&walk, ctx, scratch, mem);
    Ok(answer(action))
}

/// Appends a buffer, or notes that there was no room.
fn push(list: &mut Vec<Buf>, cap: usize, overflow: &mut bool, addr: u64, len: usize) {
    match u32::try_from(len) {
        Ok(len) if list.len() < cap => list.push(Buf { addr, len }),
        _ => *overflow = true,
    }
}

/// The action for a walked chain (its status byte is known to exist).
fn decide<M: GuestMemory>(walk: &Walk, ctx: &Context, scratch: &mut Scratch, mem: &M) -> Action {
    use BlkStatus::{IoErr, Unsupp};
    if walk.header_len < HEADER_LEN || walk.unreadable {
        return Action::Answer(IoErr);
    }
    let Ok(header) = RequestHeader::parse(&walk.header) else {
        return Action::Answer(IoErr);
    };
    let writable_data = walk.writable - 1;
    let read_only = ctx.limits.read_only;
    match header.kind() {
        Some(RequestType::In) => {
            if walk.readable_data != 0 {
                return Action::Answer(IoErr);
            }
            scratch.side = DataSide::Writable;
            transfer(walk, ctx, scratch, header.sector, writable_data)
                .map_or(Action::Answer(IoErr), |offset| {
                    Action::Io(IoOp::Read { offset })
                })
        }
        Some(RequestType::Out) => {
            if writable_data != 0 || read_only {
                return Action::Answer(IoErr);
            }
            scratch.side = DataSide::Readable;
            transfer(walk, ctx, scratch, header.sector, walk.readable_data)
                .map_or(Action::Answer(IoErr), |offset| {
                    Action::Io(IoOp::Write { offset })
                })
        }
        Some(RequestType::Flush) if ctx.acked.contains(BlkFeatures::FLUSH) => {
            if walk.readable_data != 0 || writable_data != 0 {
                return Action::Answer(IoErr);
            }
            Action::Io(IoOp::Flush)
        }
        Some(RequestType::GetId) => {
            if walk.readable_data != 0 || walk.overflow {
                return Action::Answer(IoErr);
            }
            scratch.side = DataSide::Writable;
            Action::GetId
        }
        Some(kind @ (RequestType::Discard | RequestType::WriteZeroes)) => {
            let feature = match kind {
                RequestType::Discard => BlkFeatures::DISCARD,
                _ => BlkFeatures::WRITE_ZEROES,
            };
            if !ctx.acked.contains(feature) {
                return Action::Answer(Unsupp);
            }
            if read_only || writable_data != 0 || walk.overflow {
                return Action::Answer(IoErr);
            }
            range(walk, ctx, scratch, mem, kind)
        }
        // FLUSH without the feature, GET_LIFETIME, SECURE_ERASE, zoned and unknown types.
        _ => Action::Answer(Unsupp),
    }
}

/// Checks a read or write of `len` bytes at `sector`; returns its byte offset.
fn transfer(walk: &Walk, ctx: &Context, scratch: &Scratch, sector: u64, len: u64) -> Option<u64> {
    let limits = &ctx.limits;
    let segments = scratch.data().len();
    if walk.overflow || segments > usize::try_from(limits.seg_max).unwrap_or(usize::MAX) {
        return None;
    }
    if len % SECTOR_SIZE != 0 {
        return None;
    }
    let offset = sector.checked_mul(SECTOR_SIZE)?;
    let end = offset.checked_add(len)?;
    (end <= limits.capacity).then_some(offset)
}

/// Checks a discard or write-zeroes payload (virtio 1.2 §5.2.6.2).
fn range<M: GuestMemory>(
    walk: &Walk,
    ctx: &Context,
    scratch: &Scratch,
    mem: &M,
    kind: RequestType,
) -> Action {
    use BlkStatus::{IoErr, Unsupp};
    let limits = &ctx.limits;
    let bytes = walk.readable_data;
    if bytes == 0 || bytes % RANGE_LEN != 0 {
        return Action::Answer(IoErr);
    }
    if bytes / RANGE_LEN > u64::from(limits.max_range_segments) {
        return Action::Answer(Unsupp);
    }
    let mut raw = [0u8; RANGE_LEN as usize];
    if gather(mem, &scratch.readable, &mut raw).is_none() {
        return Action::Answer(IoErr);
    }
    let Ok(seg) = DiscardSegment::parse(&raw) else {
        return Action::Answer(IoErr);
    };
    let flags_refused = match kind {
        RequestType::Discard => seg.flags != 0,
        _ => seg.has_reserved_flags(),
    };
    if flags_refused {
        return Action::Answer(Unsupp);
    }
    if seg.num_sectors > limits.max_range_sectors {
        return Action::Answer(IoErr);
    }
    let Some(offset) = seg.sector.checked_mul(SECTOR_SIZE) else {
        return Action::Answer(IoErr);
    };
    let len = u64::from(seg.num_sectors) * SECTOR_SIZE;
    match offset.checked_add(len) {
        Some(end) if end <= limits.capacity => {}
        _ => return Action::Answer(IoErr),
    }
    Action::Io(match kind {
        RequestType::Discard => IoOp::Discard { offset, len },
        _ => IoOp::WriteZeroes {
            offset,
            len,
            mode: ZeroesMode::from_flags(seg.flags),
        },
    })
}

/// Copies the first `dst.len()` bytes of `bufs` into `dst`; `None` if they are fewer or
/// cannot be read.
fn gather<M: GuestMemory>(mem: &M, bufs: &[Buf], dst: &mut [u8]) -> Option<()> {
    let mut filled = 0;
    for b in bufs {
        if filled == dst.len() {
            break;
        }
        let n = (dst.len() - filled).min(b.len as usize);
        let src = mem.translate(b.addr, n as u64).ok()?;
        src.read(0, dst.get_mut(filled..filled + n)?).ok()?;
        filled += n;
    }
    (filled == dst.len()).then_some(())
}

/// Writes the GET_ID answer into the writable data buffers: the serial, truncated to the
/// buffers (virtio 1.2 §5.2.6: 20 bytes, NUL-padded). Returns false if guest memory refused.
pub(crate) fn write_id<M: GuestMemory>(mem: &M, bufs: &[Buf], id: &[u8; ID_BYTES]) -> bool {
    let mut done = 0;
    for b in bufs {
        let n = (ID_BYTES - done).min(b.len as usize);
        if n == 0 {
            break;
        }
        let ok = match (mem.translate(b.addr, n as u64), id.get(done..done + n)) {
            (Ok(dst), Some(src)) => dst.write(0, src).is_ok(),
            _ => false,
        };
        if !ok {
            return false;
        }
        done += n;
    }
    true
}
