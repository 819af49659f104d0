//! Property test of the device against a reference model of virtio 1.2 §5.2.6: random
//! sequences of requests (every type, sectors around and beyond the capacity, odd lengths, data
//! in the wrong direction, missing status bytes, random framing into descriptors, both ring
//! formats) give the model's status, used length and read data, and leave the disk exactly as
//! the model's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod device_common;

use std::sync::Arc;

use device_common::*;
use proptest::prelude::*;
use vireo_blk::storage::{IoBackend, RamDisk, Storage};
use vireo_memory::OwnedRegion;
use vireo_queue::driver::BufferSegment;
use vireo_queue::RingFormat;

const SECTORS: u64 = 64;
const CAPACITY: u64 = SECTORS * 512;
const MAX_RANGE_SECTORS: u64 = 0x003f_ffff;
const ID: &[u8; 20] = b"prop-serial-00000001";

/// One request as generated.
#[derive(Debug, Clone)]
struct Gen {
    kind: u32,
    sector: u64,
    /// Data bytes (the driver's side of the transfer).
    len: usize,
    /// The data is in the direction opposite to the one the type needs.
    wrong_direction: bool,
    /// Discard / write-zeroes segments: (sector, sectors, flags).
    ranges: Vec<(u64, u32, u32)>,
    /// The request has a status byte.
    status: bool,
    /// Header split into two descriptors at this byte (0: one descriptor).
    header_split: usize,
    /// Data split into this many descriptors (at least 1 when there is data).
    pieces: usize,
    /// Status byte shares the last data descriptor.
    status_merged: bool,
    fill: u8,
}

fn gen() -> impl Strategy<Value = Gen> {
    let kind = prop_oneof![
        4 => Just(IN), 4 => Just(OUT), 1 => Just(FLUSH), 1 => Just(GET_ID),
        2 => Just(DISCARD), 2 => Just(WRITE_ZEROES), 1 => Just(GET_LIFETIME), 1 => any::<u32>(),
    ];
    let sector = prop_oneof![8 => 0..SECTORS + 8, 1 => any::<u64>()];
    let len =
        prop_oneof![6 => (0usize..6).prop_map(|s| s * 512), 1 => 0usize..3000, 1 => 20usize..21];
    let range = (
        prop_oneof![4 => 0..SECTORS + 4, 1 => any::<u64>()],
        prop_oneof![4 => 0u32..12, 1 => any::<u32>()],
        prop_oneof![4 => Just(0u32), 1 => 0u32..4],
    );
    (
        (kind, sector, len, prop::bool::weighted(0.1)),
        prop::collection::vec(range, 0..3),
        (
            prop::bool::weighted(0.93),
            0usize..16,
            1usize..4,
            any::<bool>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (kind, sector, len, wrong_direction),
                ranges,
                (status, split, pieces, merged, fill),
            )| Gen {
                kind,
                sector,
                len,
                wrong_direction,
                ranges: if ranges.is_empty() {
                    vec![(0, 1, 0)]
                } else {
                    ranges
                },
                status,
                header_split: split,
                pieces,
                status_merged: merged,
                fill,
            },
        )
}

/// What the model says a request gives: status, used length, and the bytes a read returns.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u8,
    used: u32,
}

/// The reference model: applies `r` to `disk` and says what the device must answer.
fn model(
    disk: &mut [u8],
    r: &Gen,
    payload_len: usize,
    writable_data: usize,
    readable_data: usize,
) -> Outcome {
    // The status is the last writable byte, whatever the driver meant (virtio 1.2 §2.7.4).
    let writable = writable_data + usize::from(r.status);
    if writable == 0 {
        return Outcome {
            status: S_UNTOUCHED,
            used: 0,
        };
    }
    let writable_data = writable - 1;
    let used = writable as u32;
    let answer = |status| Outcome { status, used };
    let range = |sector: u64, len: u64| -> Option<std::ops::Range<usize>> {
        let start = sector.checked_mul(512)?;
        let end = start.checked_add(len)?;
        (end <= CAPACITY).then_some(start as usize..end as usize)
    };
    match r.kind {
        IN => {
            if readable_data != 0 || writable_data % 512 != 0 {
                return answer(S_IOERR);
            }
            match range(r.sector, writable_data as u64) {
                Some(_) => answer(S_OK),
                None => answer(S_IOERR),
            }
        }
        OUT => {
            if writable_data != 0 || readable_data % 512 != 0 {
                return answer(S_IOERR);
            }
            match range(r.sector, readable_data as u64) {
                Some(span) => {
                    disk[span].fill(r.fill);
                    answer(S_OK)
                }
                None => answer(S_IOERR),
            }
        }
        FLUSH if readable_data != 0 || writable_data != 0 => answer(S_IOERR),
        FLUSH => answer(S_OK),
        GET_ID if readable_data != 0 => answer(S_IOERR),
        GET_ID => answer(S_OK),
        DISCARD | WRITE_ZEROES => {
            if writable_data != 0 || payload_len == 0 || payload_len % 16 != 0 {
                return answer(S_IOERR);
            }
            if payload_len > 16 {
                return answer(S_UNSUPP);
            }
            let (sector, sectors, flags) = r.ranges[0];
            let bad_flags = if r.kind == DISCARD {
                flags != 0
            } else {
                flags & !1 != 0
            };
            if bad_flags {
                return answer(S_UNSUPP);
            }
            if u64::from(sectors) > MAX_RANGE_SECTORS {
                return answer(S_IOERR);
            }
            match range(sector, u64::from(sectors) * 512) {
                Some(span) => {
                    disk[span].fill(0);
                    answer(S_OK)
                }
                None => answer(S_IOERR),
            }
        }
        _ => answer(S_UNSUPP),
    }
}

/// Splits `len` bytes at `addr` into `pieces` descriptors (none when `len` is 0).
fn split(addr: u64, len: usize, pieces: usize) -> Vec<BufferSegment> {
    if len == 0 {
        return vec![];
    }
    let pieces = pieces.clamp(1, len);
    let step = len / pieces;
    (0..pieces)
        .map(|i| {
            let start = i * step;
            let end = if i + 1 == pieces { len } else { start + step };
            BufferSegment::new(addr + start as u64, (end - start) as u32)
        })
        .collect()
}

/// Runs one generated request on the device; checks it against the model.
fn check(g: &mut Guest, model_disk: &mut [u8], r: &Gen) -> Result<(), TestCaseError> {
    g.free_all();
    let hdr = g.header(r.kind, r.sector);
    // Payload: discard/write-zeroes segments, or data bytes.
    let is_range = matches!(r.kind, DISCARD | WRITE_ZEROES);
    let data_len = if is_range { r.ranges.len() * 16 } else { r.len };
    let data = g.alloc(data_len.max(1) as u32 + 1, r.fill);
    if is_range {
        for (i, (sector, sectors, flags)) in r.ranges.iter().enumerate() {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&sector.to_le_bytes());
            b[8..12].copy_from_slice(&sectors.to_le_bytes());
            b[12..].copy_from_slice(&flags.to_le_bytes());
            g.write(data + 16 * i as u64, &b);
        }
    }
    let natural_writable =
        matches!(r.kind, IN | GET_ID) || (!is_range && r.kind != OUT && r.kind != FLUSH);
    let data_writable = natural_writable != r.wrong_direction;
    let mut readable = if r.header_split > 0 {
        vec![
            BufferSegment::new(hdr, r.header_split as u32),
            BufferSegment::new(hdr + r.header_split as u64, 16 - r.header_split as u32),
        ]
    } else {
        vec![BufferSegment::new(hdr, 16)]
    };
    let mut writable = Vec::new();
    let mut data_segs = split(data, data_len, r.pieces);
    let mut status_addr = None;
    if data_writable {
        if r.status && r.status_merged && !data_segs.is_empty() {
            let last = data_segs.last_mut().unwrap();
            status_addr = Some(last.addr + u64::from(last.len));
            last.len += 1;
            g.write(status_addr.unwrap(), &[S_UNTOUCHED]);
        }
        writable.extend(data_segs);
    } else {
        readable.extend(data_segs);
    }
    if r.status && status_addr.is_none() {
        let s = g.status_byte();
        writable.push(BufferSegment::new(s, 1));
        status_addr = Some(s);
    }
    // Without a status byte of its own, the last writable byte plays its part.
    let status_addr = status_addr.or_else(|| {
        let last = writable.last()?;
        Some(last.addr + u64::from(last.len) - 1)
    });
    let data_len_read = if r.status {
        data_len
    } else {
        data_len.saturating_sub(1)
    };
    let (readable_data, writable_data) = if data_writable {
        (0, data_len)
    } else {
        (data_len, 0)
    };
    let payload_len = if data_writable { 0 } else { data_len };
    let before = model_disk.to_vec();
    let want = model(model_disk, r, payload_len, writable_data, readable_data);
    let req = Req {
        readable,
        writable,
        status: status_addr,
    };
    let got = g.one(&req);
    prop_assert_eq!(
        Outcome {
            status: got.status,
            used: got.written
        },
        want,
        "{:?}",
        r
    );
    if got.status == S_OK && r.kind == IN && data_writable {
        let start = (r.sector * 512) as usize;
        prop_assert_eq!(
            g.read(data, data_len_read),
            before[start..start + data_len_read].to_vec()
        );
    }
    if got.status == S_OK && r.kind == GET_ID && data_writable {
        let n = data_len_read.min(20);
        prop_assert_eq!(g.read(data, n), ID[..n].to_vec());
    }
    Ok(())
}

fn disk_bytes(disk: &dyn Storage) -> Vec<u8> {
    let area = OwnedRegion::new_area(CAPACITY as usize).unwrap();
    disk.read_at(0, &[area.slice()]).unwrap();
    let mut v = vec![0u8; CAPACITY as usize];
    area.slice().read(0, &mut v).unwrap();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_device_follows_the_model(reqs in prop::collection::vec(gen(), 1..12), packed in any::<bool>()) {
        let mut ram = RamDisk::new(CAPACITY).unwrap();
        ram.set_device_id(*ID);
        let disk = Arc::new(ram);
        let format = if packed { RingFormat::Packed } else { RingFormat::Split };
        let mut g = Guest::new(Arc::clone(&disk) as Arc<dyn Storage>, options(1, IoBackend::Synchronous), format);
        let mut model_disk = vec![0u8; CAPACITY as usize];
        for r in &reqs {
            check(&mut g, &mut model_disk, r)?;
        }
        prop_assert!(disk_bytes(&*disk) == model_disk, "disk differs from the model");
    }
}
