//! virtio-net, minimal (virtio 1.2 §5.1 "Network Device"): feature bits with names and
//! dependencies, and the packet header view.
//!
//! Feature bits above 63 (RSS_CONTEXT 64 and later, 1.3 draft) do not fit the 64-bit feature
//! word used here and are not listed.

use crate::negotiation::FeatureDependency;
use crate::view::define_view;
use bitflags::bitflags;

bitflags! {
    /// virtio-net feature bits (§5.1.3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct NetFeatures: u64 {
        /// Device handles packets with partial checksum.
        const CSUM = 1 << 0;
        /// Driver handles packets with partial checksum.
        const GUEST_CSUM = 1 << 1;
        /// Control channel offloads reconfiguration.
        const CTRL_GUEST_OFFLOADS = 1 << 2;
        /// Device reports its maximum MTU.
        const MTU = 1 << 3;
        /// Device has a MAC address.
        const MAC = 1 << 5;
        /// Driver can receive TSOv4.
        const GUEST_TSO4 = 1 << 7;
        /// Driver can receive TSOv6.
        const GUEST_TSO6 = 1 << 8;
        /// Driver can receive TSO with ECN.
        const GUEST_ECN = 1 << 9;
        /// Driver can receive UFO.
        const GUEST_UFO = 1 << 10;
        /// Device can receive TSOv4.
        const HOST_TSO4 = 1 << 11;
        /// Device can receive TSOv6.
        const HOST_TSO6 = 1 << 12;
        /// Device can receive TSO with ECN.
        const HOST_ECN = 1 << 13;
        /// Device can receive UFO.
        const HOST_UFO = 1 << 14;
        /// Driver can merge receive buffers.
        const MRG_RXBUF = 1 << 15;
        /// Configuration status field is available.
        const STATUS = 1 << 16;
        /// Control virtqueue is available.
        const CTRL_VQ = 1 << 17;
        /// Control channel RX mode.
        const CTRL_RX = 1 << 18;
        /// Control channel VLAN filtering.
        const CTRL_VLAN = 1 << 19;
        /// Control channel RX extra modes.
        const CTRL_RX_EXTRA = 1 << 20;
        /// Driver can send gratuitous packets.
        const GUEST_ANNOUNCE = 1 << 21;
        /// Multiqueue with automatic receive steering.
        const MQ = 1 << 22;
        /// MAC address set through the control channel.
        const CTRL_MAC_ADDR = 1 << 23;
        /// Device-level statistics.
        const DEVICE_STATS = 1 << 50;
        /// Inner header hash for encapsulated packets.
        const HASH_TUNNEL = 1 << 51;
        /// Per-virtqueue notification coalescing.
        const VQ_NOTF_COAL = 1 << 52;
        /// Notification coalescing.
        const NOTF_COAL = 1 << 53;
        /// Driver can receive USOv4.
        const GUEST_USO4 = 1 << 54;
        /// Driver can receive USOv6.
        const GUEST_USO6 = 1 << 55;
        /// Device can receive USO.
        const HOST_USO = 1 << 56;
        /// Per-packet hash reporting.
        const HASH_REPORT = 1 << 57;
        /// Driver provides exact `hdr_len`.
        const GUEST_HDRLEN = 1 << 59;
        /// Receive-side scaling.
        const RSS = 1 << 60;
        /// Extended coalescing info.
        const RSC_EXT = 1 << 61;
        /// Standby for a primary device with the same MAC.
        const STANDBY = 1 << 62;
        /// Device reports speed and duplex.
        const SPEED_DUPLEX = 1 << 63;
    }
}

const fn dep(feature: NetFeatures, requires_one_of: NetFeatures) -> FeatureDependency {
    FeatureDependency::new(feature.bits(), requires_one_of.bits())
}

/// Feature dependencies of virtio-net (§5.1.3.1 "Feature bit requirements"); "A or B" is one
/// entry, "A and B" two.
pub const DEPENDENCIES: &[FeatureDependency] = &[
    dep(NetFeatures::GUEST_TSO4, NetFeatures::GUEST_CSUM),
    dep(NetFeatures::GUEST_TSO6, NetFeatures::GUEST_CSUM),
    dep(
        NetFeatures::GUEST_ECN,
        NetFeatures::GUEST_TSO4.union(NetFeatures::GUEST_TSO6),
    ),
    dep(NetFeatures::GUEST_UFO, NetFeatures::GUEST_CSUM),
    dep(NetFeatures::GUEST_USO4, NetFeatures::GUEST_CSUM),
    dep(NetFeatures::GUEST_USO6, NetFeatures::GUEST_CSUM),
    dep(NetFeatures::HOST_TSO4, NetFeatures::CSUM),
    dep(NetFeatures::HOST_TSO6, NetFeatures::CSUM),
    dep(
        NetFeatures::HOST_ECN,
        NetFeatures::HOST_TSO4.union(NetFeatures::HOST_TSO6),
    ),
    dep(NetFeatures::HOST_UFO, NetFeatures::CSUM),
    dep(NetFeatures::HOST_USO, NetFeatures::CSUM),
    dep(NetFeatures::CTRL_RX, NetFeatures::CTRL_VQ),
    dep(NetFeatures::CTRL_VLAN, NetFeatures::CTRL_VQ),
    dep(NetFeatures::GUEST_ANNOUNCE, NetFeatures::CTRL_VQ),
    dep(NetFeatures::MQ, NetFeatures::CTRL_VQ),
    dep(NetFeatures::CTRL_MAC_ADDR, NetFeatures::CTRL_VQ),
    dep(NetFeatures::NOTF_COAL, NetFeatures::CTRL_VQ),
    dep(
        NetFeatures::RSC_EXT,
        NetFeatures::HOST_TSO4.union(NetFeatures::HOST_TSO6),
    ),
    dep(NetFeatures::RSS, NetFeatures::CTRL_VQ),
    dep(NetFeatures::VQ_NOTF_COAL, NetFeatures::CTRL_VQ),
    dep(NetFeatures::HASH_TUNNEL, NetFeatures::CTRL_VQ),
    dep(
        NetFeatures::HASH_TUNNEL,
        NetFeatures::RSS.union(NetFeatures::HASH_REPORT),
    ),
];

/// Names of the virtio-net feature bits (legacy ones marked).
pub const FEATURE_NAMES: &[(u32, &str)] = &[
    (0, "VIRTIO_NET_F_CSUM"),
    (1, "VIRTIO_NET_F_GUEST_CSUM"),
    (2, "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS"),
    (3, "VIRTIO_NET_F_MTU"),
    (5, "VIRTIO_NET_F_MAC"),
    (6, "VIRTIO_NET_F_GSO (legacy)"),
    (7, "VIRTIO_NET_F_GUEST_TSO4"),
    (8, "VIRTIO_NET_F_GUEST_TSO6"),
    (9, "VIRTIO_NET_F_GUEST_ECN"),
    (10, "VIRTIO_NET_F_GUEST_UFO"),
    (11, "VIRTIO_NET_F_HOST_TSO4"),
    (12, "VIRTIO_NET_F_HOST_TSO6"),
    (13, "VIRTIO_NET_F_HOST_ECN"),
    (14, "VIRTIO_NET_F_HOST_UFO"),
    (15, "VIRTIO_NET_F_MRG_RXBUF"),
    (16, "VIRTIO_NET_F_STATUS"),
    (17, "VIRTIO_NET_F_CTRL_VQ"),
    (18, "VIRTIO_NET_F_CTRL_RX"),
    (19, "VIRTIO_NET_F_CTRL_VLAN"),
    (20, "VIRTIO_NET_F_CTRL_RX_EXTRA"),
    (21, "VIRTIO_NET_F_GUEST_ANNOUNCE"),
    (22, "VIRTIO_NET_F_MQ"),
    (23, "VIRTIO_NET_F_CTRL_MAC_ADDR"),
    (41, "VIRTIO_NET_F_GUEST_RSC4 (legacy)"),
    (42, "VIRTIO_NET_F_GUEST_RSC6 (legacy)"),
    (50, "VIRTIO_NET_F_DEVICE_STATS"),
    (51, "VIRTIO_NET_F_HASH_TUNNEL"),
    (52, "VIRTIO_NET_F_VQ_NOTF_COAL"),
    (53, "VIRTIO_NET_F_NOTF_COAL"),
    (54, "VIRTIO_NET_F_GUEST_USO4"),
    (55, "VIRTIO_NET_F_GUEST_USO6"),
    (56, "VIRTIO_NET_F_HOST_USO"),
    (57, "VIRTIO_NET_F_HASH_REPORT"),
    (59, "VIRTIO_NET_F_GUEST_HDRLEN"),
    (60, "VIRTIO_NET_F_RSS"),
    (61, "VIRTIO_NET_F_RSC_EXT"),
    (62, "VIRTIO_NET_F_STANDBY"),
    (63, "VIRTIO_NET_F_SPEED_DUPLEX"),
];

/// `flags` of the header: checksum needed (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: checksum already validated (`VIRTIO_NET_HDR_F_DATA_VALID`).
pub const HDR_F_DATA_VALID: u8 = 2;
/// `flags`: RSC info in the header (`VIRTIO_NET_HDR_F_RSC_INFO`).
pub const HDR_F_RSC_INFO: u8 = 4;

/// `gso_type` values (§5.1.6).
pub mod gso {
    /// No segmentation.
    pub const NONE: u8 = 0;
    /// TCPv4.
    pub const TCPV4: u8 = 1;
    /// UDP (UFO).
    pub const UDP: u8 = 3;
    /// TCPv6.
    pub const TCPV6: u8 = 4;
    /// UDP L4 (USO).
    pub const UDP_L4: u8 = 5;
    /// ECN bit, or-ed into the type.
    pub const ECN: u8 = 0x80;
}

define_view! {
    /// `struct virtio_net_hdr` (§5.1.6): 12 bytes for modern devices (the hash fields that
    /// follow with HASH_REPORT are not included).
    pub struct NetHdr(12) {
        /// `VIRTIO_NET_HDR_F_*` flags.
        flags / set_flags: u8 @ 0,
        /// `VIRTIO_NET_HDR_GSO_*` type.
        gso_type / set_gso_type: u8 @ 1,
        /// Header length.
        hdr_len / set_hdr_len: le16 @ 2,
        /// Segment size.
        gso_size / set_gso_size: le16 @ 4,
        /// Where checksumming starts.
        csum_start / set_csum_start: le16 @ 6,
        /// Where to store the checksum, from `csum_start`.
        csum_offset / set_csum_offset: le16 @ 8,
        /// Number of merged receive buffers (MRG_RXBUF, or always with VERSION_1).
        num_buffers / set_num_buffers: le16 @ 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiation::{NegotiationError, Negotiator};
    use crate::Features;

    fn f(n: NetFeatures) -> Features {
        Features::VERSION_1 | Features::from_bits_retain(n.bits())
    }

    #[test]
    fn dependencies_from_the_spec() {
        // §5.1.3.1: GUEST_ECN needs GUEST_TSO4 or GUEST_TSO6, which need GUEST_CSUM.
        let n = Negotiator::modern(DEPENDENCIES);
        let all = Features::all() | Features::from_bits_retain(NetFeatures::all().bits());
        let ecn = NetFeatures::GUEST_ECN | NetFeatures::GUEST_TSO6;
        assert!(matches!(
            n.check(all, f(ecn)),
            Err(NegotiationError::MissingDependency { .. })
        ));
        assert!(n.check(all, f(ecn | NetFeatures::GUEST_CSUM)).is_ok());
        assert!(n.check(all, f(NetFeatures::MQ)).is_err());
        assert!(n
            .check(all, f(NetFeatures::MQ | NetFeatures::CTRL_VQ))
            .is_ok());
        // HASH_TUNNEL needs CTRL_VQ and (RSS or HASH_REPORT).
        let ht = NetFeatures::HASH_TUNNEL | NetFeatures::CTRL_VQ;
        assert!(n.check(all, f(ht)).is_err());
        assert!(n.check(all, f(ht | NetFeatures::HASH_REPORT)).is_ok());
    }

    #[test]
    fn names_cover_every_named_bit() {
        for flag in NetFeatures::all().iter() {
            let bit = flag.bits().trailing_zeros();
            assert!(
                FEATURE_NAMES.iter().any(|(b, _)| *b == bit),
                "bit {bit} has no name"
            );
        }
    }

    #[test]
    fn header_layout() {
        let mut buf = [0u8; 12];
        let mut h = NetHdr::new_checked(&mut buf[..]).unwrap_or_else(|e| panic!("{e}"));
        h.set_flags(HDR_F_NEEDS_CSUM);
        h.set_gso_type(gso::TCPV4 | gso::ECN);
        h.set_hdr_len(54);
        h.set_gso_size(1448);
        h.set_csum_start(34);
        h.set_csum_offset(16);
        h.set_num_buffers(1);
        assert_eq!(buf, [1, 0x81, 54, 0, 0xa8, 5, 34, 0, 16, 0, 1, 0]);
        assert!(NetHdr::new_checked(&[0u8; 11][..]).is_err());
    }
}
