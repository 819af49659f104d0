//! Zero-length buffers in a scatter list, for every backend: they carry no bytes and must not
//! shift, drop or duplicate the bytes of the others (the synchronous file path fills its iovec
//! array from the buffers; an empty one must not leave a hole in it). The `Storage` interface
//! is public, so its callers are peers too (CONTRIBUTING: "No panics on peer input").
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::io::Write;

use proptest::prelude::*;
use vireo_blk::storage::{FileDisk, FileOptions, RamDisk, Storage};
use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion, SharedSlice};

const GUEST_BASE: u64 = 0x10_0000;
const GUEST_LEN: usize = 512 * 1024;
const DISK: usize = 128 * 1024;

fn guest() -> GuestMemoryMap {
    GuestMemoryMap::single(GUEST_BASE, OwnedRegion::new_area(GUEST_LEN).unwrap()).unwrap()
}

fn image() -> tempfile::NamedTempFile {
    let mut tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    tmp.write_all(&vec![0; DISK]).unwrap();
    tmp.flush().unwrap();
    tmp
}

/// Distinct slices of guest memory of the given sizes (zero allowed), each filled with bytes
/// that name the slice and the position in it.
fn slices<'m>(mem: &'m GuestMemoryMap, sizes: &[usize]) -> Vec<SharedSlice<'m>> {
    let mut at = GUEST_BASE;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let s = mem.translate(at, n as u64).unwrap();
            let bytes: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8 ^ 0x5a).collect();
            s.write(0, &bytes).unwrap();
            at += n as u64 + 64;
            s
        })
        .collect()
}

fn concat(bufs: &[SharedSlice<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bufs {
        let mut v = vec![0; b.len()];
        b.read(0, &mut v).unwrap();
        out.extend(v);
    }
    out
}

/// Writes `sizes` at `offset`, reads the range back into one buffer, and checks the bytes.
fn round_trip(disk: &dyn Storage, sizes: &[usize], offset: u64) {
    let mem = guest();
    let bufs = slices(&mem, sizes);
    let expected = concat(&bufs);
    disk.write_at(offset, &bufs).unwrap();
    let total = expected.len();
    let back = mem
        .translate(GUEST_BASE + 256 * 1024, total as u64)
        .unwrap();
    back.fill(0, total, 0).unwrap();
    if total > 0 {
        disk.read_at(offset, &[back]).unwrap();
    }
    let mut got = vec![0; total];
    back.read(0, &mut got).unwrap();
    assert_eq!(got, expected, "sizes {sizes:?} at {offset}");
    // And the scatter read back into the same shape.
    let shaped = slices(&mem, sizes);
    for s in &shaped {
        s.fill(0, s.len(), 0).unwrap();
    }
    disk.read_at(offset, &shaped).unwrap();
    assert_eq!(concat(&shaped), expected, "scatter read, sizes {sizes:?}");
}

fn each_backend(f: impl Fn(&dyn Storage)) {
    f(&RamDisk::new(DISK as u64).unwrap());
    let tmp = image();
    f(&FileDisk::open(tmp.path(), &FileOptions::default()).unwrap());
}

#[test]
fn a_leading_empty_buffer_moves_nothing() {
    each_backend(|disk| round_trip(disk, &[0, 512], 0));
}

#[test]
fn an_empty_buffer_after_a_full_iovec_batch_does_not_resend_an_old_one() {
    // 64 buffers fill one preadv/pwritev batch; the next batch starts with an empty one.
    let mut sizes = vec![512; 64];
    sizes.extend([0, 512, 0, 0, 1024]);
    each_backend(|disk| round_trip(disk, &sizes, 4096));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_mix_of_empty_and_full_buffers_round_trips(
        sizes in prop::collection::vec(prop_oneof![Just(0usize), Just(512), Just(1024), Just(1536)], 1..150),
        sector in 0u64..8,
    ) {
        let total: usize = sizes.iter().sum();
        prop_assume!(total + 8 * 512 <= DISK && total + sizes.len() * 64 <= 256 * 1024);
        each_backend(|disk| round_trip(disk, &sizes, sector * 512));
    }
}
