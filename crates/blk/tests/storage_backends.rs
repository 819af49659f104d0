//! The synchronous `Storage` interface, for the RAM disk and the file disk alike: data moves
//! between the backend and guest memory (SharedSlices of an OwnedRegion behind a
//! GuestMemoryMap, as the device sees it), every range is checked, and a reference model
//! (a `Vec<u8>`) predicts every result.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Write;

use proptest::prelude::*;
use vireo_blk::storage::{
    Access, CacheMode, FileDisk, FileOptions, RamDisk, Storage, StorageError, ZeroesMode,
};
use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedSlice};

const GUEST_BASE: u64 = 0x10_0000;
const GUEST_LEN: usize = 256 * 1024;
const DISK: usize = 64 * 1024;

fn guest() -> GuestMemoryMap {
    GuestMemoryMap::single(GUEST_BASE, OwnedRegion::new_area(GUEST_LEN).unwrap()).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A temporary image in /tmp holding `data` (removed when the handle drops).
fn image(data: &[u8]) -> tempfile::NamedTempFile {
    let mut tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    tmp.write_all(data).unwrap();
    tmp.flush().unwrap();
    tmp
}

type Backend = (Box<dyn Storage>, Option<tempfile::NamedTempFile>);

/// Both backends, each `DISK` bytes of zeroes.
fn backends() -> Vec<Backend> {
    let tmp = image(&vec![0; DISK]);
    let file = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    vec![
        (Box::new(RamDisk::new(DISK as u64).unwrap()), None),
        (Box::new(file), Some(tmp)),
    ]
}

/// Slices of guest memory of the given sizes, from `addr` on, with gaps between them.
fn segments<'m>(mem: &'m GuestMemoryMap, addr: u64, sizes: &[usize]) -> Vec<SharedSlice<'m>> {
    let mut at = addr;
    sizes
        .iter()
        .map(|&n| {
            let s = mem.translate(at, n as u64).unwrap();
            at += n as u64 + 100;
            s
        })
        .collect()
}

fn gather(bufs: &[SharedSlice<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bufs {
        let mut v = vec![0; b.len()];
        b.read(0, &mut v).unwrap();
        out.extend(v);
    }
    out
}

fn scatter(bufs: &[SharedSlice<'_>], data: &[u8]) {
    let mut at = 0;
    for b in bufs {
        b.write(0, &data[at..at + b.len()]).unwrap();
        at += b.len();
    }
}

#[test]
fn scatter_gather_round_trips() {
    let mem = guest();
    for (disk, _tmp) in backends() {
        let sizes = [512, 1, 4095, 3000, 0, 8192];
        let total: usize = sizes.iter().sum();
        let data = pattern(7, total);
        let src = segments(&mem, GUEST_BASE, &sizes);
        scatter(&src, &data);
        disk.write_at(1000, &src).unwrap();
        let dst = segments(
            &mem,
            GUEST_BASE + 128 * 1024,
            &[100, 15_000, total - 15_100],
        );
        disk.read_at(1000, &dst).unwrap();
        assert_eq!(gather(&dst), data, "{disk:?}");
        // Bytes before the written range are untouched.
        let edge = segments(&mem, GUEST_BASE, &[1000]);
        disk.read_at(0, &edge).unwrap();
        assert_eq!(gather(&edge), vec![0; 1000]);
        disk.flush().unwrap();
    }
}

#[test]
fn out_of_range_and_overflow_are_refused_untouched() {
    let mem = guest();
    for (disk, _tmp) in backends() {
        let cap = disk.capacity();
        assert_eq!(cap, DISK as u64);
        let buf = segments(&mem, GUEST_BASE, &[1024]);
        scatter(&buf, &[0xaa; 1024]);
        assert_eq!(
            disk.write_at(cap - 512, &buf),
            Err(StorageError::OutOfRange {
                offset: cap - 512,
                len: 1024,
                capacity: cap
            })
        );
        assert_eq!(
            disk.read_at(u64::MAX - 10, &buf),
            Err(StorageError::Overflow {
                offset: u64::MAX - 10,
                len: 1024
            })
        );
        assert!(matches!(
            disk.discard(cap, 1),
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk.discard(1, u64::MAX),
            Err(StorageError::Overflow { .. })
        ));
        assert!(matches!(
            disk.write_zeroes(u64::MAX, 2, ZeroesMode::MayUnmap),
            Err(StorageError::Overflow { .. })
        ));
        // The refused write changed nothing, and reading exactly up to the end works.
        let tail = segments(&mem, GUEST_BASE + 4096, &[512]);
        disk.read_at(cap - 512, &tail).unwrap();
        assert_eq!(gather(&tail), vec![0; 512]);
        assert_eq!(disk.read_at(cap, &[]), Ok(()));
    }
}

#[test]
fn read_only_refuses_every_write() {
    let mem = guest();
    let data = pattern(3, DISK);
    let tmp = image(&data);
    let opts = FileOptions {
        access: Access::ReadOnly,
        ..FileOptions::default()
    };
    let file = FileDisk::open(tmp.path(), &opts).unwrap();
    let ram = RamDisk::with_access(DISK as u64, Access::ReadOnly).unwrap();
    let buf = segments(&mem, GUEST_BASE, &[512]);
    for disk in [&file as &dyn Storage, &ram] {
        assert!(disk.read_only());
        assert_eq!(disk.write_at(0, &buf), Err(StorageError::ReadOnly));
        assert_eq!(disk.discard(0, 512), Err(StorageError::ReadOnly));
        assert_eq!(
            disk.write_zeroes(0, 512, ZeroesMode::KeepAllocated),
            Err(StorageError::ReadOnly)
        );
        disk.read_at(0, &buf).unwrap();
    }
    assert_eq!(gather(&buf), vec![0; 512]); // the RAM disk, read last
    file.read_at(512, &buf).unwrap();
    assert_eq!(gather(&buf), data[512..1024]);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
}

#[test]
fn discard_and_write_zeroes_read_back_as_zeroes() {
    let mem = guest();
    for (disk, _tmp) in backends() {
        let all = segments(&mem, GUEST_BASE, &[DISK]);
        scatter(&all, &pattern(9, DISK));
        disk.write_at(0, &all).unwrap();
        disk.discard(4096, 8192).unwrap();
        disk.write_zeroes(20_000, 1000, ZeroesMode::KeepAllocated)
            .unwrap();
        disk.write_zeroes(30_000, 5000, ZeroesMode::MayUnmap)
            .unwrap();
        let mut expect = pattern(9, DISK);
        expect[4096..12_288].fill(0);
        expect[20_000..21_000].fill(0);
        expect[30_000..35_000].fill(0);
        let back = segments(&mem, GUEST_BASE + 100_000, &[DISK]);
        disk.read_at(0, &back).unwrap();
        assert!(gather(&back) == expect, "{disk:?}");
    }
}

#[test]
fn file_capacity_is_whole_sectors_and_the_tail_is_never_touched() {
    let mem = guest();
    let data = pattern(5, 4096 + 300);
    let tmp = image(&data);
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    assert_eq!(disk.capacity(), 4096);
    let buf = segments(&mem, GUEST_BASE, &[512]);
    assert!(matches!(
        disk.write_at(4096, &buf),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.write_zeroes(3584, 513, ZeroesMode::KeepAllocated),
        Err(StorageError::OutOfRange { .. })
    ));
    disk.write_zeroes(3584, 512, ZeroesMode::KeepAllocated)
        .unwrap();
    let on_disk = std::fs::read(tmp.path()).unwrap();
    assert_eq!(on_disk.len(), 4096 + 300);
    assert_eq!(on_disk[4096..], data[4096..]);
    assert_eq!(on_disk[3584..4096], [0; 512]);
    assert_eq!(on_disk[..3584], data[..3584]);
}

#[test]
fn a_truncated_image_is_an_error_not_a_hang() {
    let mem = guest();
    let tmp = image(&pattern(1, DISK));
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    tmp.as_file().set_len(1000).unwrap();
    let buf = segments(&mem, GUEST_BASE, &[4096]);
    assert_eq!(
        disk.read_at(0, &buf),
        Err(StorageError::UnexpectedEof { offset: 1000 })
    );
}

#[test]
fn direct_io_refuses_misaligned_requests() {
    let mem = guest();
    let tmp = image(&pattern(2, DISK));
    let opts = FileOptions {
        cache: CacheMode::Direct { alignment: 512 },
        ..FileOptions::default()
    };
    let disk = match FileDisk::open(tmp.path(), &opts) {
        Ok(d) => d,
        // Some file systems (tmpfs) refuse O_DIRECT altogether.
        Err(StorageError::Io {
            errno: libc::EINVAL,
            ..
        }) => return,
        Err(e) => panic!("{e}"),
    };
    let aligned = segments(&mem, GUEST_BASE, &[4096]);
    let odd = [mem.translate(GUEST_BASE + 1, 512).unwrap()];
    assert_eq!(
        disk.read_at(1, &aligned),
        Err(StorageError::Misaligned { align: 512 })
    );
    assert_eq!(
        disk.read_at(0, &odd),
        Err(StorageError::Misaligned { align: 512 })
    );
    disk.read_at(512, &aligned).unwrap();
    assert_eq!(gather(&aligned), pattern(2, DISK)[512..4608]);
}

#[test]
fn device_ids() {
    let ram = RamDisk::new(4096).unwrap();
    assert_eq!(&ram.device_id()[..10], b"vireo-ram\0");
    let tmp = image(&[0; 4096]);
    let id = *b"serial-0123456789abc";
    let opts = FileOptions {
        device_id: Some(id),
        ..FileOptions::default()
    };
    assert_eq!(FileDisk::open(tmp.path(), &opts).unwrap().device_id(), id);
    let default = FileDisk::open(tmp.path(), &FileOptions::default())
        .unwrap()
        .device_id();
    assert_eq!(&default[..6], b"vireo-");
    assert_eq!(
        RamDisk::new(511).unwrap_err(),
        StorageError::Memory(vireo_memory::MemoryError::EmptyRegion)
    );
}

/// One operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        sizes: Vec<usize>,
        seed: u8,
    },
    Read {
        offset: u64,
        sizes: Vec<usize>,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Zeroes {
        offset: u64,
        len: u64,
        mode: ZeroesMode,
    },
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..DISK as u64 + 600,
        1 => Just(u64::MAX - 100),
        1 => (DISK as u64 - 600)..DISK as u64,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = prop::collection::vec(0usize..3000, 0..5);
    let mode = prop_oneof![Just(ZeroesMode::KeepAllocated), Just(ZeroesMode::MayUnmap)];
    prop_oneof![
        (offset(), sizes.clone(), any::<u8>()).prop_map(|(offset, sizes, seed)| Op::Write {
            offset,
            sizes,
            seed
        }),
        (offset(), sizes).prop_map(|(offset, sizes)| Op::Read { offset, sizes }),
        (offset(), 0u64..9000).prop_map(|(offset, len)| Op::Discard { offset, len }),
        (offset(), 0u64..9000, mode).prop_map(|(offset, len, mode)| Op::Zeroes {
            offset,
            len,
            mode
        }),
    ]
}

/// The model's answer: the range `offset..offset+len` if it is valid.
fn model_range(offset: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= DISK as u64).then_some(offset as usize..end as usize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any sequence of operations leaves both backends exactly where a byte vector predicts,
    /// and each operation succeeds exactly when its range is valid.
    #[test]
    fn backends_match_the_model(ops in prop::collection::vec(op(), 1..24)) {
        let mem = guest();
        for (disk, _tmp) in backends() {
            let mut model = vec![0u8; DISK];
            for op in &ops {
                let (result, range) = match op {
                    Op::Write { offset, sizes, seed } => {
                        let bufs = segments(&mem, GUEST_BASE, sizes);
                        let data = pattern(*seed, sizes.iter().sum());
                        scatter(&bufs, &data);
                        let range = model_range(*offset, data.len() as u64);
                        if let Some(r) = range.clone() {
                            model[r].copy_from_slice(&data);
                        }
                        (disk.write_at(*offset, &bufs), range)
                    }
                    Op::Read { offset, sizes } => {
                        let bufs = segments(&mem, GUEST_BASE, sizes);
                        let result = disk.read_at(*offset, &bufs);
                        let range = model_range(*offset, sizes.iter().sum::<usize>() as u64);
                        if let (Some(r), Ok(())) = (range.clone(), &result) {
                            prop_assert!(gather(&bufs) == model[r]);
                        }
                        (result, range)
                    }
                    Op::Discard { offset, len } | Op::Zeroes { offset, len, .. } => {
                        let result = match op {
                            Op::Zeroes { mode, .. } => disk.write_zeroes(*offset, *len, *mode),
                            _ => disk.discard(*offset, *len),
                        };
                        let range = model_range(*offset, *len);
                        if let Some(r) = range.clone() {
                            model[r].fill(0);
                        }
                        (result, range)
                    }
                };
                prop_assert_eq!(result.is_ok(), range.is_some(), "{:?} on {:?}: {:?}", op, disk, result);
            }
            let all = segments(&mem, GUEST_BASE, &[DISK]);
            disk.read_at(0, &all).unwrap();
            prop_assert!(gather(&all) == model);
        }
    }
}

#[test]
fn only_files_and_block_devices_are_images() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let opts = FileOptions {
        access: Access::ReadOnly,
        ..FileOptions::default()
    };
    assert!(matches!(
        FileDisk::open(dir.path(), &opts),
        Err(StorageError::Io {
            errno: libc::EINVAL,
            ..
        })
    ));
    assert!(matches!(
        FileDisk::open(dir.path().join("missing"), &opts),
        Err(StorageError::Io {
            errno: libc::ENOENT,
            ..
        })
    ));
}

#[test]
fn hundreds_of_segments_round_trip() {
    // More buffers than one preadv/pwritev call takes (64 here; IOV_MAX is 1024).
    let mem = guest();
    for (disk, _tmp) in backends() {
        let sizes: Vec<usize> = (0..300).map(|i| 1 + (i * 37) % 200).collect();
        let total: usize = sizes.iter().sum();
        let data = pattern(11, total);
        let src = segments(&mem, GUEST_BASE, &sizes);
        scatter(&src, &data);
        disk.write_at(512, &src).unwrap();
        let back = segments(&mem, GUEST_BASE + 128 * 1024, &[total]);
        disk.read_at(512, &back).unwrap();
        assert!(gather(&back) == data, "{disk:?}");
        let many = segments(&mem, GUEST_BASE + 128 * 1024, &sizes);
        disk.read_at(512, &many).unwrap();
        assert!(gather(&many) == data, "{disk:?}");
    }
}
