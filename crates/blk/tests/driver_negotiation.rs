//! What the driver accepts (virtio 1.2 §2.2.1, §5.2.3) and the device limits it reads from
//! the configuration space (§5.2.4).
#![allow(clippy::unwrap_used)]

use vireo_blk::driver::{
    negotiate, Access, BlkDeviceInfo, BlkDriverError, NegotiateError, NegotiationOptions,
};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures};
use vireo_spec::Features;

fn blk(f: BlkFeatures) -> Features {
    f.to_features()
}

#[test]
fn accepts_what_it_uses_and_nothing_else() {
    let offered = Features::VERSION_1
        | Features::EVENT_IDX
        | Features::INDIRECT_DESC
        | Features::RING_PACKED
        | Features::IN_ORDER
        | blk(BlkFeatures::SEG_MAX
            | BlkFeatures::FLUSH
            | BlkFeatures::MQ
            | BlkFeatures::CONFIG_WCE
            | BlkFeatures::LIFETIME
            | BlkFeatures::DISCARD);
    let got = negotiate(offered, &NegotiationOptions::default()).unwrap();
    assert_eq!(
        got,
        Features::VERSION_1
            | Features::EVENT_IDX
            | Features::INDIRECT_DESC
            | blk(BlkFeatures::SEG_MAX
                | BlkFeatures::FLUSH
                | BlkFeatures::MQ
                | BlkFeatures::DISCARD)
    );
    // Never more than offered (§2.2.1).
    assert!(offered.contains(got));
}

#[test]
fn packed_only_when_asked_and_offered() {
    let opts = NegotiationOptions {
        format: RingFormat::Packed,
        without: Features::EVENT_IDX,
    };
    assert_eq!(
        negotiate(Features::VERSION_1 | Features::EVENT_IDX, &opts),
        Err(NegotiateError::PackedNotOffered)
    );
    let got = negotiate(
        Features::VERSION_1 | Features::EVENT_IDX | Features::RING_PACKED,
        &opts,
    )
    .unwrap();
    assert_eq!(got, Features::VERSION_1 | Features::RING_PACKED);
}

#[test]
fn legacy_devices_are_refused() {
    assert_eq!(
        negotiate(blk(BlkFeatures::FLUSH), &NegotiationOptions::default()),
        Err(NegotiateError::NotModern)
    );
}

#[test]
fn limits_follow_the_negotiated_features() {
    let config = BlkConfig {
        capacity: 100,
        seg_max: 0,
        size_max: 0,
        num_queues: 0,
        max_discard_seg: 0,
        ..BlkConfig::default()
    };
    // Without SEG_MAX, SIZE_MAX, MQ the zero fields are not looked at.
    let info = BlkDeviceInfo::new(Features::VERSION_1 | blk(BlkFeatures::RO), &config).unwrap();
    assert_eq!(
        (info.seg_max, info.size_max, info.num_queues, info.blk_size),
        (None, None, 1, 512)
    );
    assert_eq!(info.access, Access::ReadOnly);
    assert_eq!(info.max_discard_seg, 1);
    assert_eq!(info.capacity_bytes(), 51200);
    // SIZE_MAX with size_max 0 (QEMU's vhost-user-blk export) means no limit.
    let info = BlkDeviceInfo::new(Features::VERSION_1 | blk(BlkFeatures::SIZE_MAX), &config);
    assert_eq!(info.unwrap().size_max, None);
    let tiny = BlkConfig {
        size_max: 100,
        ..config
    };
    for (feature, reason, config) in [
        (BlkFeatures::SEG_MAX, "seg_max", config),
        (BlkFeatures::SIZE_MAX, "size_max", tiny),
        (BlkFeatures::MQ, "num_queues", config),
        (BlkFeatures::BLK_SIZE, "blk_size", config),
    ] {
        let err = BlkDeviceInfo::new(Features::VERSION_1 | blk(feature), &config).unwrap_err();
        assert!(
            matches!(err, BlkDriverError::InvalidConfig { reason: r } if r.contains(reason)),
            "{feature:?}: {err}"
        );
    }
}
