//! Tests of the virtio-blk formats against the layouts in virtio 1.2 §5.2.

use super::config::offset;
use super::*;
use proptest::prelude::*;

#[test]
fn feature_bits() {
    // §5.2.3.
    assert_eq!(BlkFeatures::RO.bits(), 1 << 5);
    assert_eq!(BlkFeatures::FLUSH.bits(), 1 << 9);
    assert_eq!(BlkFeatures::SECURE_ERASE.bits(), 1 << 16);
    let word = crate::Features::VERSION_1 | BlkFeatures::FLUSH.to_features();
    assert_eq!(BlkFeatures::from_features(word), BlkFeatures::FLUSH);
}

#[test]
fn request_types_and_statuses() {
    for (raw, t) in [
        (0, RequestType::In),
        (1, RequestType::Out),
        (4, RequestType::Flush),
        (8, RequestType::GetId),
        (10, RequestType::GetLifetime),
        (11, RequestType::Discard),
        (13, RequestType::WriteZeroes),
        (14, RequestType::SecureErase),
    ] {
        assert_eq!(RequestType::from_u32(raw), Some(t));
        assert_eq!(t.as_u32(), raw);
    }
    for raw in [2, 3, 5, 9, 12, 15, u32::MAX] {
        assert_eq!(RequestType::from_u32(raw), None, "type {raw}");
    }
    assert_eq!(BlkStatus::Unsupp.as_u8(), 2);
    assert_eq!(BlkStatus::from_u8(1), Some(BlkStatus::IoErr));
    assert_eq!(BlkStatus::from_u8(3), None);
}

#[test]
fn request_header_layout() {
    let mut buf = [0u8; 16];
    let h = RequestHeader {
        request_type: 1,
        reserved: 0,
        sector: 0x0102_0304,
    };
    h.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(buf, [1, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]);
    let back = RequestHeader::parse(&buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.kind(), Some(RequestType::Out));
    assert_eq!(
        RequestHeader::parse(&[0u8; 15]),
        Err(ViewError::Truncated {
            needed: 16,
            got: 15
        })
    );
}

#[test]
fn discard_segment_layout() {
    let s = DiscardSegment {
        sector: 8,
        num_sectors: 16,
        flags: SEGMENT_F_UNMAP,
    };
    let mut buf = [0u8; 16];
    s.emit(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(buf, [8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0]);
    let back = DiscardSegment::parse(&buf).unwrap_or_else(|e| panic!("{e}"));
    assert!(back.unmap());
    assert!(!back.has_reserved_flags());
    let reserved = DiscardSegment { flags: 2, ..s };
    assert!(reserved.has_reserved_flags());
}

fn sample() -> BlkConfig {
    BlkConfig {
        capacity: 0x1_0000_0000,
        size_max: 0x11,
        seg_max: 0x22,
        geometry: Geometry {
            cylinders: 0x0304,
            heads: 5,
            sectors: 6,
        },
        blk_size: 4096,
        topology: Topology {
            physical_block_exp: 3,
            alignment_offset: 1,
            min_io_size: 8,
            opt_io_size: 0x40,
        },
        writeback: 1,
        num_queues: 4,
        max_discard_sectors: 0xa1,
        max_discard_seg: 0xa2,
        discard_sector_alignment: 0xa3,
        max_write_zeroes_sectors: 0xb1,
        max_write_zeroes_seg: 0xb2,
        write_zeroes_may_unmap: 1,
        max_secure_erase_sectors: 0xc1,
        max_secure_erase_seg: 0xc2,
        secure_erase_sector_alignment: 0xc3,
        zoned: ZonedCharacteristics {
            zone_sectors: 0xd1,
            max_open_zones: 0xd2,
            max_active_zones: 0xd3,
            max_append_sectors: 0xd4,
            write_granularity: 0xd5,
            model: 2,
        },
    }
}

#[test]
fn config_offsets_match_the_spec() {
    // virtio 1.2 §5.2.4: fixed offsets, checked byte by byte.
    let b = sample().to_bytes();
    let at = |o: usize| b.get(o).copied();
    assert_eq!(b.len(), 96);
    assert_eq!(at(4), Some(1), "capacity le64 high word");
    assert_eq!(at(offset::SIZE_MAX), Some(0x11));
    assert_eq!(at(offset::CYLINDERS + 1), Some(0x03));
    assert_eq!(at(offset::HEADS), Some(5));
    assert_eq!(at(21), Some(0x10), "blk_size 4096 at 20");
    assert_eq!(at(offset::OPT_IO_SIZE), Some(0x40));
    assert_eq!(at(32), Some(1), "writeback");
    assert_eq!(at(34), Some(4), "num_queues");
    assert_eq!(at(36), Some(0xa1));
    assert_eq!(at(48), Some(0xb1));
    assert_eq!(at(56), Some(1), "write_zeroes_may_unmap");
    assert_eq!(at(60), Some(0xc1));
    assert_eq!(at(68), Some(0xc3));
    assert_eq!(at(72), Some(0xd1));
    assert_eq!(at(88), Some(0xd5));
    assert_eq!(at(92), Some(2), "zoned model");
    assert_eq!(BlkConfig::parse(&b), Ok(sample()));
}

#[test]
fn short_configs_parse_with_zeros() {
    let b = sample().to_bytes();
    let short = b.get(..60).unwrap_or(&[]);
    let c = BlkConfig::parse(short).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.capacity, sample().capacity);
    assert_eq!(c.max_write_zeroes_seg, 0xb2);
    assert_eq!(c.max_secure_erase_sectors, 0);
    assert!(BlkConfig::parse(&[0u8; 7]).is_err());
    assert!(sample().emit(&mut [0u8; 95]).is_err());
}

#[test]
fn partial_reads_and_writes() {
    let c = sample();
    let w = c
        .read_at(offset::BLK_SIZE, 4)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.as_ref(), &4096u32.to_le_bytes());
    assert_eq!(c.read_at(96, 0).map(|w| w.as_ref().len()), Ok(0));
    for (o, l) in [(95, 2), (97, 0), (usize::MAX, 2), (0, 97)] {
        assert!(
            matches!(c.read_at(o, l), Err(ViewError::OutOfRange { .. })),
            "{o}+{l}"
        );
    }
    let mut c = c;
    c.write_at(offset::WRITEBACK, &[0])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.writeback, 0);
    assert!(c.write_at(offset::CAPACITY, &[0; 8]).is_err());
    assert!(c.write_at(offset::WRITEBACK, &[0, 0]).is_err());
}

proptest! {
    #[test]
    fn config_round_trips_through_bytes(bytes in prop::collection::vec(any::<u8>(), 96)) {
        let c = BlkConfig::parse(&bytes).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        let out = c.to_bytes();
        // Equal except the unused bytes (33, 57..60, 93..96), which emit as zero.
        for (i, (a, b)) in bytes.iter().zip(out.iter()).enumerate() {
            let unused = i == 33 || (57..60).contains(&i) || (93..96).contains(&i);
            prop_assert_eq!(if unused { 0 } else { *a }, *b, "byte {}", i);
        }
    }

    #[test]
    fn read_at_matches_the_full_bytes(offset in 0usize..100, len in 0usize..100) {
        let c = sample();
        let full = c.to_bytes();
        match c.read_at(offset, len) {
            Ok(w) => prop_assert_eq!(Some(w.as_ref()), full.get(offset..offset + len)),
            Err(_) => prop_assert!(offset + len > 96),
        }
    }
}
