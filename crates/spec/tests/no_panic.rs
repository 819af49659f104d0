//! Every entry point of the spec layer, fed arbitrary input: it must answer (value or typed
//! error) and never panic (CONTRIBUTING: "No panics on peer input").

use proptest::prelude::*;
use vireo_spec::blk::{BlkConfig, DiscardSegment, RequestHeader};
use vireo_spec::names::feature_names;
use vireo_spec::negotiation::Negotiator;
use vireo_spec::notification::NotificationData;
use vireo_spec::packed::{EventSuppression, PackedDescriptor};
use vireo_spec::split::{SplitDescriptor, SplitUsedElem};
use vireo_spec::{
    blk, net, packed, split, DeviceId, DeviceType, Features, RingAreas, StatusMachine,
};

proptest! {
    #[test]
    fn parsers_answer_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let long_enough = |n: usize| bytes.len() >= n;
        prop_assert_eq!(SplitDescriptor::parse(&bytes).is_ok(), long_enough(16));
        prop_assert_eq!(SplitUsedElem::parse(&bytes).is_ok(), long_enough(8));
        prop_assert_eq!(PackedDescriptor::parse(&bytes).is_ok(), long_enough(16));
        prop_assert_eq!(EventSuppression::parse(&bytes).is_ok(), long_enough(4));
        prop_assert_eq!(RequestHeader::parse(&bytes).is_ok(), long_enough(16));
        prop_assert_eq!(DiscardSegment::parse(&bytes).is_ok(), long_enough(16));
        prop_assert_eq!(BlkConfig::parse(&bytes).is_ok(), long_enough(8));
        prop_assert_eq!(net::NetHdr::new_checked(&bytes[..]).is_ok(), long_enough(12));
        // Unchecked views read what is missing as zero instead of panicking.
        let v = split::Descriptor::new_unchecked(&bytes[..]);
        let _ = (v.addr(), v.len(), v.flags(), v.next());
        let mut copy = bytes.clone();
        let mut w = packed::Descriptor::new_unchecked(&mut copy[..]);
        w.set_addr(u64::MAX);
        w.set_flags(u16::MAX);
        prop_assert_eq!(copy.len(), bytes.len());
    }

    #[test]
    fn numbers_from_a_peer(size in any::<u16>(), id in any::<u32>(), word in any::<u64>(), value in any::<u32>(), addr in any::<u64>()) {
        let areas = RingAreas { desc: addr, driver: addr, device: addr };
        if let Ok(l) = split::layout(size) {
            prop_assert!(size.is_power_of_two());
            let _ = l.check(areas);
        }
        if let Ok(l) = packed::layout(size) {
            prop_assert!((1..=32768).contains(&size));
            let _ = l.check(areas);
        }
        prop_assert_eq!(DeviceType::from_u32(id).as_u32(), id);
        let _ = DeviceId::from_u32(id);
        prop_assert_eq!(feature_names(Features::from_bits_retain(word), Some(DeviceId::Net)).count() as u32, word.count_ones());
        prop_assert_eq!(NotificationData::from_u32(value).to_u32(), value);
        let _ = blk::RequestType::from_u32(value);
        let n = Negotiator::modern(blk::DEPENDENCIES);
        let _ = n.check(Features::from_bits_retain(word), Features::from_bits_retain(addr));
        let _ = n.select(Features::from_bits_retain(word), Features::from_bits_retain(addr));
    }

    #[test]
    fn config_windows(offset in any::<usize>(), len in any::<usize>(), data in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut c = BlkConfig::default();
        if let Ok(w) = c.read_at(offset, len) {
            prop_assert_eq!(w.as_ref().len(), len);
        }
        let _ = c.write_at(offset, &data);
    }

    #[test]
    fn any_status_and_feature_writes(
        ops in prop::collection::vec(
            (
                prop_oneof![prop::sample::select(vec![1u8, 3, 11, 15]), any::<u8>()],
                prop_oneof![Just(Features::VERSION_1.bits()), any::<u64>()],
            ),
            0..64,
        ),
    ) {
        let mut d = StatusMachine::new(Features::VERSION_1, Negotiator::modern(net::DEPENDENCIES));
        for (status, features) in ops {
            let _ = d.write_driver_features(Features::from_bits_retain(features));
            let _ = d.write_status(status);
            // FEATURES_OK and DRIVER_OK only ever with a valid negotiated set.
            if d.status().contains(vireo_spec::DeviceStatus::FEATURES_OK) {
                prop_assert_eq!(d.negotiated(), Some(Features::VERSION_1));
            }
        }
    }
}
