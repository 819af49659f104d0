//! Property test: the driver's request slots against a reference model (virtio 1.2 §5.2.6).
//! Random sequences of submissions (reads, writes, flushes on random slots), device passes
//! (answering everything published, in order or reversed, with OK, IOERR or UNSUPP) and polls;
//! the model predicts every refusal, every completion (slot, kind, status, length) and the disk
//! and buffer contents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_fake;

use std::collections::BTreeMap;

use driver_fake::{config, features_on, harness, CAPACITY, FORMATS};
use proptest::prelude::*;
use vireo_blk::driver::{BlkDriverError, RequestKind};
use vireo_spec::blk::{BlkFeatures, BlkStatus};

const SLOTS: u16 = 8;
/// Each slot's data buffer: 8 sectors at slot * 4096 in the data area.
const SLOT_BYTES: usize = 4096;

#[derive(Debug, Clone)]
enum Action {
    Submit {
        slot: u16,
        kind: u8,
        sector: u64,
        sectors: u32,
        fill: u8,
    },
    Serve {
        status: u8,
        reverse: bool,
    },
    Poll,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..SLOTS + 1, 0u8..3, 0..CAPACITY - 8, 1u32..=8, any::<u8>()).prop_map(
            |(slot, kind, sector, sectors, fill)| Action::Submit {
                slot,
                kind,
                sector,
                sectors,
                fill
            }
        ),
        2 => (0u8..3, any::<bool>()).prop_map(|(status, reverse)| Action::Serve { status, reverse }),
        2 => Just(Action::Poll),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Req {
    slot: u16,
    kind: RequestKind,
    sector: u64,
    sectors: u32,
}

fn run(actions: &[Action], format: vireo_queue::RingFormat) -> Result<(), TestCaseError> {
    let mut h = harness(
        features_on(format, BlkFeatures::empty()),
        &config(),
        64,
        SLOTS,
    );
    let mut disk = vec![0u8; (CAPACITY * 512) as usize];
    // Submitted, not yet answered (in submission order).
    let mut pending: Vec<Req> = Vec::new();
    // Answered, not yet polled: slot -> (request, status).
    let mut answered: BTreeMap<u16, (Req, BlkStatus)> = BTreeMap::new();
    // What each slot's buffer must hold after its read completes.
    let mut expect_buf: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    for a in actions {
        match *a {
            Action::Submit {
                slot,
                kind,
                sector,
                sectors,
                fill,
            } => {
                let len = sectors * 512;
                let off = usize::from(slot) * SLOT_BYTES;
                let busy = pending.iter().any(|r| r.slot == slot) || answered.contains_key(&slot);
                let buf = [h.buf(off, len)];
                let kind =
                    [RequestKind::Read, RequestKind::Write, RequestKind::Flush][kind as usize];
                // (the buffer of a slot in flight belongs to the device)
                if kind == RequestKind::Write && slot < SLOTS && !busy {
                    h.write_data(off, &vec![fill; len as usize]);
                }
                let r = match kind {
                    RequestKind::Read => h.q().submit_read(slot, sector, &buf),
                    RequestKind::Write => h.q().submit_write(slot, sector, &buf),
                    _ => h.q().submit_flush(slot),
                };
                if slot >= SLOTS {
                    prop_assert_eq!(r, Err(BlkDriverError::NoSuchSlot { slot, slots: SLOTS }));
                } else if busy {
                    prop_assert_eq!(r, Err(BlkDriverError::SlotBusy { slot }));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    pending.push(Req {
                        slot,
                        kind,
                        sector,
                        sectors,
                    });
                }
            }
            Action::Serve { status, reverse } => {
                h.q().kick_prepare().unwrap();
                h.device.answer = status;
                h.device.reverse = reverse;
                let n = h.device.serve().map_err(TestCaseError::fail)?;
                prop_assert_eq!(n, pending.len());
                let st = BlkStatus::from_u8(status).unwrap();
                let mut order = std::mem::take(&mut pending);
                if reverse {
                    order.reverse();
                }
                for r in order {
                    let at = (r.sector * 512) as usize;
                    let len = r.sectors as usize * 512;
                    let off = usize::from(r.slot) * SLOT_BYTES;
                    if st == BlkStatus::Ok {
                        match r.kind {
                            RequestKind::Write => {
                                disk[at..at + len].copy_from_slice(&h.read_data(off, len));
                            }
                            RequestKind::Read => {
                                expect_buf.insert(r.slot, disk[at..at + len].to_vec());
                            }
                            _ => {}
                        }
                    }
                    answered.insert(r.slot, (r, st));
                }
            }
            Action::Poll => {
                let mut got = Vec::new();
                h.q().poll_completions(|c| got.push(c)).unwrap();
                prop_assert_eq!(got.len(), answered.len());
                for c in got {
                    let (r, st) = answered.remove(&c.slot).expect("completion not answered");
                    prop_assert_eq!((c.request, c.status), (r.kind, st));
                    let writable = match r.kind {
                        RequestKind::Read => r.sectors * 512 + 1,
                        _ => 1,
                    };
                    prop_assert_eq!(c.written, writable);
                    if let Some(want) = expect_buf.remove(&c.slot) {
                        let off = usize::from(c.slot) * SLOT_BYTES;
                        prop_assert!(h.read_data(off, want.len()) == want, "slot {}", c.slot);
                    }
                    prop_assert!(h.q().is_slot_free(c.slot));
                }
            }
        }
        let in_flight = pending.len() + answered.len();
        prop_assert_eq!(usize::from(h.q().in_flight()), in_flight);
    }
    prop_assert!(h.device.disk == disk, "disk differs from the model");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn slots_and_completions_match_the_model(actions in prop::collection::vec(action(), 1..60)) {
        for format in FORMATS {
            run(&actions, format)?;
        }
    }
}
