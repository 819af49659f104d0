//! The asynchronous path: `IoQueue` with `io_uring` (where the kernel allows it) and with the
//! forced synchronous fallback gives identical results, and every request submitted completes
//! exactly once with its token.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;

use vireo_blk::storage::{
    Access, ActiveBackend, Completion, FileDisk, FileOptions, IoBackend, IoQueue, IoRequest,
    QueueOptions, RamDisk, Storage, StorageError, Wait, ZeroesMode,
};
use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedSlice};

const GUEST_BASE: u64 = 0x4000_0000;
const GUEST_LEN: usize = 4 << 20;
const DISK: usize = 1 << 20;
/// Each request of a batch owns one chunk of the disk and of guest memory, so the results do
/// not depend on the order the kernel runs them in.
const CHUNK: usize = 16 * 1024;

const MODES: [IoBackend; 2] = [IoBackend::Auto, IoBackend::Synchronous];

fn guest() -> GuestMemoryMap {
    GuestMemoryMap::single(GUEST_BASE, OwnedRegion::new_area(GUEST_LEN).unwrap()).unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9e37) ^ seed.wrapping_mul(131)) as u8)
        .collect()
}

fn image(data: &[u8]) -> tempfile::NamedTempFile {
    let mut tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    tmp.write_all(data).unwrap();
    tmp.flush().unwrap();
    tmp
}

fn options(depth: usize, backend: IoBackend) -> QueueOptions {
    QueueOptions {
        depth,
        max_segments: 8,
        backend,
    }
}

fn read_guest(mem: &GuestMemoryMap) -> Vec<u8> {
    let mut v = vec![0; GUEST_LEN];
    mem.translate(GUEST_BASE, GUEST_LEN as u64)
        .unwrap()
        .read(0, &mut v)
        .unwrap();
    v
}

/// The completions of one batch, by token.
type Batch = BTreeMap<u64, Result<(), StorageError>>;

/// Reaps until nothing is in flight; returns the completions by token (a token seen twice
/// fails the test).
fn drain(q: &mut IoQueue<'_>) -> Batch {
    let mut seen = BTreeMap::new();
    while q.in_flight() > 0 {
        let n = q
            .reap(Wait::AtLeastOne, |c: Completion| {
                assert!(
                    seen.insert(c.token, c.result).is_none(),
                    "token {} twice",
                    c.token
                );
            })
            .unwrap();
        assert!(n > 0);
    }
    assert_eq!(
        q.reap(Wait::NoWait, |c| panic!("extra completion {c:?}"))
            .unwrap(),
        0
    );
    seen
}

/// A small deterministic generator (xorshift), so both paths see the same requests.
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Splits `len` bytes of guest memory at `addr` into up to `parts` slices.
fn split<'m>(
    mem: &'m GuestMemoryMap,
    addr: u64,
    len: usize,
    rng: &mut Rng,
    parts: u64,
) -> Vec<SharedSlice<'m>> {
    let mut out = Vec::new();
    let (mut at, mut left) = (addr, len as u64);
    for i in 0..parts {
        let n = if i + 1 == parts {
            left
        } else {
            rng.next(left + 1)
        };
        out.push(mem.translate(at, n).unwrap());
        at += n + 64; // leave gaps: the buffers are not contiguous
        left -= n;
    }
    out
}

/// Runs `batches` batches of mixed requests (valid and invalid) against `disk` through a queue
/// of the given backend; returns every completion, the final guest memory and the backend used.
fn workload(
    disk: &dyn Storage,
    backend: IoBackend,
    batches: usize,
) -> (Vec<Batch>, Vec<u8>, ActiveBackend) {
    let mem = guest();
    let init = pattern(99, GUEST_LEN);
    mem.translate(GUEST_BASE, GUEST_LEN as u64)
        .unwrap()
        .write(0, &init)
        .unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (results, active) = IoQueue::scope(disk, options(32, backend), |q| {
        let mut results = Vec::new();
        for batch in 0..batches {
            let n = 1 + rng.next(32) as usize;
            let mut keep = Vec::new(); // the buffers of this batch
            for k in 0..n {
                let token = (batch * 100 + k) as u64;
                let chunk = ((k * 7 + batch) % (DISK / CHUNK)) as u64 * CHUNK as u64;
                let offset = chunk + rng.next(4096);
                let len = rng.next(CHUNK as u64 - 4096) as usize;
                let gaddr = GUEST_BASE + (k * 2 * CHUNK) as u64;
                let parts = 1 + rng.next(9); // 9 parts is one more than max_segments
                keep.push(split(&mem, gaddr, len, &mut rng, parts));
                let bufs = keep.last().unwrap().as_slice();
                let request = match rng.next(10) {
                    0..=2 => IoRequest::Read { offset, bufs },
                    3..=5 => IoRequest::Write { offset, bufs },
                    6 => IoRequest::Flush,
                    7 => IoRequest::Discard {
                        offset,
                        len: len as u64,
                    },
                    8 => IoRequest::WriteZeroes {
                        offset,
                        len: len as u64,
                        mode: ZeroesMode::KeepAllocated,
                    },
                    _ => IoRequest::Read {
                        offset: DISK as u64 + offset % 200,
                        bufs,
                    },
                };
                // Chunks are distinct within a batch only while k < chunks; keep batches small.
                assert!(n <= DISK / CHUNK);
                q.submit(token, request).unwrap();
            }
            q.commit().unwrap();
            results.push(drain(q));
        }
        (results, q.backend())
    })
    .unwrap();
    (results, read_guest(&mem), active)
}

#[test]
fn uring_and_forced_fallback_give_identical_results() {
    let initial = pattern(5, DISK);
    let mut outcomes = Vec::new();
    for backend in MODES {
        let tmp = image(&initial);
        let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
        let (completions, memory, active) = workload(&disk, backend, 40);
        eprintln!("{backend:?} ran as {active:?}");
        if backend == IoBackend::Synchronous {
            assert_eq!(active, ActiveBackend::Synchronous);
        }
        let errors = completions
            .iter()
            .flat_map(|b| b.values())
            .filter(|r| r.is_err())
            .count();
        assert!(errors > 0, "the workload includes invalid requests");
        outcomes.push((completions, memory, std::fs::read(tmp.path()).unwrap()));
    }
    // The RAM disk, synchronously, is a third opinion.
    let ram = RamDisk::new(DISK as u64).unwrap();
    let mem = guest();
    let all = mem.translate(GUEST_BASE, DISK as u64).unwrap();
    all.write(0, &initial).unwrap();
    ram.write_at(0, &[all]).unwrap();
    let (completions, memory, _) = workload(&ram, IoBackend::Auto, 40);
    ram.read_at(0, &[all]).unwrap();
    let mut disk = vec![0; DISK];
    all.read(0, &mut disk).unwrap();
    outcomes.push((completions, memory, disk));

    let (first, rest) = outcomes.split_first().unwrap();
    for other in rest {
        assert!(first.0 == other.0, "completions differ");
        assert!(first.1 == other.1, "guest memory differs");
        assert!(first.2 == other.2, "disk contents differ");
    }
    assert!(first.2 != initial, "the workload wrote something");
}

#[test]
fn a_full_queue_of_requests_completes_exactly_once() {
    let initial = pattern(8, DISK);
    for backend in MODES {
        let tmp = image(&initial);
        let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
        let mem = guest();
        let depth = 64;
        IoQueue::scope(&disk, options(depth, backend), |q| {
            assert_eq!(q.depth(), depth);
            for round in 0..3u64 {
                let bufs: Vec<_> = (0..depth)
                    .map(|i| [mem.translate(GUEST_BASE + (i * 4096) as u64, 4096).unwrap()])
                    .collect();
                for (i, b) in bufs.iter().enumerate() {
                    let offset = ((i as u64 * 3 + round) % 256) * 4096;
                    q.submit(round << 32 | i as u64, IoRequest::Read { offset, bufs: b })
                        .unwrap();
                }
                assert_eq!(q.in_flight(), depth);
                let extra = IoRequest::Read {
                    offset: 0,
                    bufs: &bufs[0],
                };
                assert_eq!(
                    q.submit(1 << 40, extra),
                    Err(StorageError::QueueFull { depth })
                );
                let seen = drain(q);
                let want: Vec<u64> = (0..depth as u64).map(|i| round << 32 | i).collect();
                assert_eq!(seen.keys().copied().collect::<Vec<_>>(), want);
                assert!(seen.values().all(Result::is_ok));
                for (i, b) in bufs.iter().enumerate() {
                    let offset = ((i * 3 + round as usize) % 256) * 4096;
                    let mut got = vec![0; 4096];
                    b[0].read(0, &mut got).unwrap();
                    assert!(
                        got == initial[offset..offset + 4096],
                        "{backend:?} round {round} buf {i}"
                    );
                }
            }
        })
        .unwrap();
    }
}

#[test]
fn invalid_requests_complete_with_their_error() {
    let tmp = image(&pattern(1, DISK));
    let ro = FileOptions {
        access: Access::ReadOnly,
        ..FileOptions::default()
    };
    let disk = FileDisk::open(tmp.path(), &ro).unwrap();
    let mem = guest();
    let one = [mem.translate(GUEST_BASE, 512).unwrap()];
    let many: Vec<_> = (0..9)
        .map(|i| mem.translate(GUEST_BASE + i * 512, 512).unwrap())
        .collect();
    for backend in MODES {
        let seen = IoQueue::scope(&disk, options(8, backend), |q| {
            q.submit(
                1,
                IoRequest::Write {
                    offset: 0,
                    bufs: &one,
                },
            )
            .unwrap();
            q.submit(
                2,
                IoRequest::Read {
                    offset: DISK as u64,
                    bufs: &one,
                },
            )
            .unwrap();
            q.submit(
                3,
                IoRequest::Read {
                    offset: u64::MAX,
                    bufs: &one,
                },
            )
            .unwrap();
            q.submit(
                4,
                IoRequest::Read {
                    offset: 0,
                    bufs: &many,
                },
            )
            .unwrap();
            q.submit(
                5,
                IoRequest::Discard {
                    offset: 0,
                    len: 512,
                },
            )
            .unwrap();
            q.submit(
                6,
                IoRequest::Read {
                    offset: DISK as u64 - 512,
                    bufs: &one,
                },
            )
            .unwrap();
            q.submit(7, IoRequest::Flush).unwrap();
            drain(q)
        })
        .unwrap();
        let expect = BTreeMap::from([
            (1, Err(StorageError::ReadOnly)),
            (
                2,
                Err(StorageError::OutOfRange {
                    offset: DISK as u64,
                    len: 512,
                    capacity: DISK as u64,
                }),
            ),
            (
                3,
                Err(StorageError::Overflow {
                    offset: u64::MAX,
                    len: 512,
                }),
            ),
            (4, Err(StorageError::TooManySegments { count: 9, max: 8 })),
            (5, Err(StorageError::ReadOnly)),
            (6, Ok(())),
            (7, Ok(())),
        ]);
        assert_eq!(seen, expect, "{backend:?}");
    }
}

#[test]
fn a_truncated_image_fails_the_same_way_on_both_paths() {
    // The read comes back short (the kernel stops at end of file); the ring resubmits the rest,
    // which then reads nothing: the same error as the synchronous path.
    let mem = guest();
    for backend in MODES {
        let tmp = image(&pattern(2, DISK));
        let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
        tmp.as_file().set_len(70_000).unwrap();
        let bufs = [
            mem.translate(GUEST_BASE, 65_536).unwrap(),
            mem.translate(GUEST_BASE + 100_000, 65_536).unwrap(),
        ];
        let seen = IoQueue::scope(&disk, options(4, backend), |q| {
            q.submit(
                1,
                IoRequest::Read {
                    offset: 0,
                    bufs: &bufs,
                },
            )
            .unwrap();
            q.submit(
                2,
                IoRequest::Read {
                    offset: 4096,
                    bufs: &bufs[1..],
                },
            )
            .unwrap();
            drain(q)
        })
        .unwrap();
        assert_eq!(
            seen[&1],
            Err(StorageError::UnexpectedEof { offset: 70_000 }),
            "{backend:?}"
        );
        assert_eq!(seen[&2], Ok(()), "{backend:?}");
    }
}

#[test]
fn leaving_the_scope_waits_for_requests_in_flight() {
    let data = pattern(3, DISK);
    let tmp = image(&data);
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    let mem = guest();
    let bufs: Vec<_> = (0..16)
        .map(|i| [mem.translate(GUEST_BASE + i * 65_536, 65_536).unwrap()])
        .collect();
    IoQueue::scope(&disk, options(16, IoBackend::Auto), |q| {
        for (i, b) in bufs.iter().enumerate() {
            q.submit(
                i as u64,
                IoRequest::Read {
                    offset: i as u64 * 65_536,
                    bufs: b,
                },
            )
            .unwrap();
        }
        q.commit().unwrap();
        // Return without reaping: the scope must not end before the kernel is done.
    })
    .unwrap();
    let mut got = vec![0; DISK];
    mem.translate(GUEST_BASE, DISK as u64)
        .unwrap()
        .read(0, &mut got)
        .unwrap();
    assert!(got == data);
}

#[test]
fn requiring_uring_without_a_file_descriptor_is_an_error() {
    let ram = RamDisk::new(4096).unwrap();
    let r = IoQueue::scope(&ram, options(4, IoBackend::RequireUring), |_| ());
    assert_eq!(
        r,
        Err(StorageError::UringUnavailable {
            errno: libc::EOPNOTSUPP
        })
    );
    let auto = IoQueue::scope(&ram, options(4, IoBackend::Auto), |q| q.backend()).unwrap();
    assert_eq!(auto, ActiveBackend::Synchronous);
}

#[test]
fn uring_is_used_where_the_kernel_allows_it() {
    // Where io_uring is enabled for everyone, Auto must not silently fall back (a CI sandbox
    // that forbids it through seccomp sets VIREO_NO_IO_URING=1).
    let enabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map_or(true, |s| s.trim() == "0");
    if !enabled || std::env::var_os("VIREO_NO_IO_URING").is_some() {
        return;
    }
    let tmp = image(&[0; 4096]);
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    let active = IoQueue::scope(&disk, options(4, IoBackend::Auto), |q| q.backend()).unwrap();
    assert_eq!(active, ActiveBackend::Uring);
}

#[test]
fn the_completion_fd_signals_finished_requests() {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let data = pattern(4, DISK);
    let tmp = image(&data);
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    let mem = guest();
    let buf = [mem.translate(GUEST_BASE, 8192).unwrap()];
    IoQueue::scope(&disk, options(4, IoBackend::Auto), |q| {
        let Some(fd) = q.completion_fd().map(|f| f.try_clone_to_owned().unwrap()) else {
            assert_eq!(q.backend(), ActiveBackend::Synchronous);
            return;
        };
        let readable = |timeout: i64| {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let t = Timespec {
                tv_sec: timeout,
                tv_nsec: 0,
            };
            poll(&mut fds, Some(&t)).unwrap() == 1
        };
        assert!(!readable(0));
        q.submit(
            42,
            IoRequest::Read {
                offset: 8192,
                bufs: &buf,
            },
        )
        .unwrap();
        q.commit().unwrap();
        assert!(readable(10), "no notification within 10 s");
        q.acknowledge();
        assert!(!readable(0));
        let mut seen = Vec::new();
        q.reap(Wait::NoWait, |c| seen.push(c)).unwrap();
        assert_eq!(
            seen,
            vec![Completion {
                token: 42,
                result: Ok(())
            }]
        );
    })
    .unwrap();
    let mut got = vec![0; 8192];
    buf[0].read(0, &mut got).unwrap();
    assert!(got == data[8192..16_384]);
}

#[test]
fn one_disk_serves_several_queues_on_several_threads() {
    let tmp = image(&vec![0; DISK]);
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    let mem = guest();
    let expect = pattern(6, DISK);
    mem.translate(GUEST_BASE, DISK as u64)
        .unwrap()
        .write(0, &expect)
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (disk, mem) = (&disk, &mem);
            s.spawn(move || {
                // Thread t writes quarter t, 4 KiB per request, 16 in flight.
                let quarter = DISK as u64 / 4;
                let bufs: Vec<_> = (0..quarter / 4096)
                    .map(|i| {
                        [mem.translate(GUEST_BASE + t * quarter + i * 4096, 4096)
                            .unwrap()]
                    })
                    .collect();
                IoQueue::scope(disk, options(16, IoBackend::Auto), |q| {
                    let mut done = 0;
                    for (i, b) in bufs.iter().enumerate() {
                        let offset = t * quarter + i as u64 * 4096;
                        if q.in_flight() == q.depth() {
                            done += q
                                .reap(Wait::AtLeastOne, |c| assert_eq!(c.result, Ok(())))
                                .unwrap();
                        }
                        q.submit(i as u64, IoRequest::Write { offset, bufs: b })
                            .unwrap();
                    }
                    done += drain(q).len();
                    // A flush covers the writes completed before it (all of them now).
                    q.submit(u64::MAX, IoRequest::Flush).unwrap();
                    let flushed = drain(q);
                    assert_eq!(flushed.get(&u64::MAX), Some(&Ok(())));
                    done += flushed.len();
                    assert_eq!(done, bufs.len() + 1);
                })
                .unwrap();
            });
        }
    });
    assert!(std::fs::read(tmp.path()).unwrap() == expect);
}
