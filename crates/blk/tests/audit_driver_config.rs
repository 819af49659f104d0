//! The driver's view of a device it does not trust: any configuration space bytes with any
//! negotiated virtio-blk features (virtio 1.2 §5.2.4). `BlkDeviceInfo::new` answers with limits
//! that hold their documented invariants or with `InvalidConfig`; a driver built on accepted
//! limits then refuses, with a typed error, every request those limits exclude (sector + length
//! near u64::MAX, segments over size_max / seg_max, ranges over the discard limits), and never
//! panics.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use vireo_blk::driver::{
    Access, BlkDeviceInfo, BlkDriver, BlkDriverError, BlkRange, BufferSegment, SlotArea,
    SlotOptions,
};
use vireo_memory::OwnedRegion;
use vireo_queue::driver::{required_size, DriverQueue, DriverQueueOptions};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures, SECTOR_SIZE};
use vireo_spec::Features;

const BASE: u64 = 0x10_0000;
const QSIZE: u16 = 64;

fn features(blk_bits: u64) -> Features {
    let blk = BlkFeatures::from_bits_truncate(blk_bits);
    Features::VERSION_1 | blk.to_features()
}

/// A driver with one queue over fresh memory (no device: only submission is checked).
fn driver(info: BlkDeviceInfo) -> Result<BlkDriver, BlkDriverError> {
    let qopts = DriverQueueOptions::default();
    let ring =
        required_size(RingFormat::Split, QSIZE, info.features, &qopts).next_multiple_of(4096);
    let sopts = SlotOptions {
        slots: 8,
        max_ranges: 4,
        max_data_segments: 8,
    };
    let slot_len = sopts.area_size().next_multiple_of(4096);
    let area = OwnedRegion::new_area(ring + slot_len).unwrap();
    let queue = DriverQueue::<u16>::new(
        area.sub_area(0, ring).unwrap(),
        BASE,
        QSIZE,
        info.features,
        qopts,
    )
    .unwrap();
    let slot_area = SlotArea {
        area: area.sub_area(ring, slot_len).unwrap(),
        guest_addr: BASE + ring as u64,
    };
    BlkDriver::new(info, vec![(queue, slot_area)], &sopts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_config_with_any_features_gives_sound_limits_or_a_typed_error(
        bytes in prop::collection::vec(any::<u8>(), 60..=96),
        blk_bits in any::<u64>(),
        edge in prop_oneof![Just(None), Just(Some(u64::MAX)), Just(Some(0u64)), Just(Some(1u64))],
    ) {
        let mut config = BlkConfig::parse(&bytes).unwrap();
        if let Some(capacity) = edge {
            config.capacity = capacity;
        }
        let negotiated = features(blk_bits);
        let info = match BlkDeviceInfo::new(negotiated, &config) {
            Ok(info) => info,
            Err(e) => {
                prop_assert!(matches!(e, BlkDriverError::InvalidConfig { .. }), "{e:?}");
                return Ok(());
            }
        };
        prop_assert!(info.blk_size.is_power_of_two() && u64::from(info.blk_size) >= SECTOR_SIZE);
        prop_assert!(info.num_queues >= 1);
        prop_assert!(info.seg_max.is_none_or(|m| m >= 1));
        prop_assert!(info.size_max.is_none_or(|m| u64::from(m) >= SECTOR_SIZE));
        prop_assert!(info.max_discard_seg >= 1 && info.max_write_zeroes_seg >= 1);
        prop_assert_eq!(info.capacity_bytes(), info.capacity.saturating_mul(SECTOR_SIZE));
        prop_assert_eq!(info.access == Access::ReadOnly, negotiated.contains(BlkFeatures::RO.to_features()));
    }

    #[test]
    fn requests_outside_accepted_limits_are_refused_before_the_ring(
        bytes in prop::collection::vec(any::<u8>(), 60..=96),
        blk_bits in any::<u64>(),
        capacity in prop_oneof![Just(u64::MAX), Just(u64::MAX / 512), 0u64..64, any::<u64>()],
        sector in prop_oneof![Just(u64::MAX), Just(u64::MAX - 7), any::<u64>(), 0u64..64],
        lens in prop::collection::vec(prop_oneof![Just(512u32), Just(4096), Just(0), any::<u32>()], 1..12),
        num_sectors in prop_oneof![Just(u32::MAX), Just(1u32), any::<u32>()],
    ) {
        let mut config = BlkConfig::parse(&bytes).unwrap();
        config.capacity = capacity;
        config.num_queues = config.num_queues.max(1);
        let Ok(info) = BlkDeviceInfo::new(features(blk_bits), &config) else {
            return Ok(());
        };
        let mut d = driver(info).unwrap();
        let q = d.queue(0).unwrap();
        let bufs: Vec<BufferSegment> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| BufferSegment::new(BASE + 0x10_0000 * i as u64, len))
            .collect();
        let total: u64 = lens.iter().map(|&l| u64::from(l)).sum();
        match q.submit_read(0, sector, &bufs) {
            Ok(()) => {
                // Accepted: whole sectors, inside the disk, each segment within size_max.
                prop_assert!(total > 0 && total % SECTOR_SIZE == 0);
                prop_assert!(sector.checked_add(total / SECTOR_SIZE).is_some_and(|end| end <= capacity));
                prop_assert!(info.size_max.is_none_or(|m| lens.iter().all(|&l| l <= m)));
                prop_assert!(info.seg_max.is_none_or(|m| lens.len() as u64 <= u64::from(m)));
            }
            Err(BlkDriverError::BeyondCapacity { .. }) => {
                prop_assert!(sector.checked_add(total / SECTOR_SIZE).is_none_or(|end| end > capacity));
            }
            Err(e) => prop_assert!(!matches!(e, BlkDriverError::Device(_)), "{e:?}"),
        }
        let range = [BlkRange { sector, num_sectors }];
        if let Ok(()) = q.submit_discard(1, &range) {
            prop_assert!(sector.checked_add(u64::from(num_sectors)).is_some_and(|end| end <= capacity));
            prop_assert!(info.max_discard_sectors == 0 || num_sectors <= info.max_discard_sectors);
        }
    }
}
