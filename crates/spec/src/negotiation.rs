//! Feature negotiation (virtio 1.2 §2.2 "Feature Bits", §3.1.1 steps 4 and 5).
//!
//! The device offers a feature word; the driver accepts a subset. The driver "MUST NOT accept
//! a feature which the device did not offer, and MUST NOT accept a feature which requires
//! another feature which was not accepted" (§2.2.1). [`Negotiator::check`] enforces both on
//! the device side; [`Negotiator::select`] computes the largest acceptable subset on the
//! driver side. Device-specific dependencies are data: a `&[FeatureDependency]` table such as
//! [`crate::blk::DEPENDENCIES`] or [`crate::net::DEPENDENCIES`].

use crate::features::Features;
use crate::spec_error;

/// One dependency rule: if `feature` is accepted, at least one bit of `requires_one_of` must be
/// accepted too. A rule that needs several features is several entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDependency {
    /// The feature (one or more bits) the rule is about.
    pub feature: Features,
    /// At least one of these must be accepted along with `feature`.
    pub requires_one_of: Features,
}

impl FeatureDependency {
    /// `feature` (a bit mask) needs at least one bit of `requires_one_of` (a bit mask).
    pub const fn new(feature: u64, requires_one_of: u64) -> Self {
        FeatureDependency {
            feature: Features::from_bits_retain(feature),
            requires_one_of: Features::from_bits_retain(requires_one_of),
        }
    }

    /// True if `accepted` breaks this rule.
    #[inline]
    pub fn is_broken_by(&self, accepted: Features) -> bool {
        accepted.intersects(self.feature) && !accepted.intersects(self.requires_one_of)
    }
}

const V1: u64 = Features::VERSION_1.bits();

/// Device-independent rules: the features defined with virtio 1.0 and later only exist for a
/// modern (VERSION_1) device (§6 "Reserved Feature Bits").
pub const DEVICE_INDEPENDENT_DEPENDENCIES: &[FeatureDependency] = &[
    FeatureDependency::new(Features::ACCESS_PLATFORM.bits(), V1),
    FeatureDependency::new(Features::RING_PACKED.bits(), V1),
    FeatureDependency::new(Features::IN_ORDER.bits(), V1),
    FeatureDependency::new(Features::ORDER_PLATFORM.bits(), V1),
    FeatureDependency::new(Features::SR_IOV.bits(), V1),
    FeatureDependency::new(Features::NOTIFICATION_DATA.bits(), V1),
    FeatureDependency::new(Features::NOTIF_CONFIG_DATA.bits(), V1),
    FeatureDependency::new(Features::RING_RESET.bits(), V1),
    FeatureDependency::new(Features::ADMIN_VQ.bits(), V1),
    FeatureDependency::new(Features::SUSPEND.bits(), V1),
];

/// Whether the driver must be modern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPolicy {
    /// VERSION_1 must be accepted (a modern driver and device; virtio 1.2 §6.1: a driver MUST
    /// accept VERSION_1 if it is offered, and a modern device fails FEATURES_OK without it).
    Modern,
    /// A legacy driver may leave VERSION_1 out (only the dependency rules are checked).
    AllowLegacy,
}

spec_error! {
    /// Why a driver's accepted feature set is refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum NegotiationError {
        /// the driver accepted feature bits the device did not offer
        NotOffered { bits: Features },
        /// an accepted feature needs another feature that was not accepted
        MissingDependency { feature: Features, requires_one_of: Features },
        /// a modern driver must accept VIRTIO_F_VERSION_1
        Version1Missing,
    }
}

/// The negotiation rules of one device: the device-independent rules, a device-specific table,
/// and the version policy.
#[derive(Debug, Clone, Copy)]
pub struct Negotiator<'a> {
    device_rules: &'a [FeatureDependency],
    version: VersionPolicy,
}

impl<'a> Negotiator<'a> {
    /// Modern negotiation with the device-specific `device_rules`.
    pub const fn modern(device_rules: &'a [FeatureDependency]) -> Self {
        Negotiator {
            device_rules,
            version: VersionPolicy::Modern,
        }
    }

    /// Negotiation with an explicit version policy.
    pub const fn new(device_rules: &'a [FeatureDependency], version: VersionPolicy) -> Self {
        Negotiator {
            device_rules,
            version,
        }
    }

    /// The version policy.
    pub const fn version(&self) -> VersionPolicy {
        self.version
    }

    fn rules(&self) -> impl Iterator<Item = &FeatureDependency> {
        DEVICE_INDEPENDENT_DEPENDENCIES
            .iter()
            .chain(self.device_rules.iter())
    }

    /// Device side: checks what the driver `accepted` against what the device `offered`, and
    /// returns the negotiated set (equal to `accepted`) if every rule holds (§2.2.1).
    pub fn check(
        &self,
        offered: Features,
        accepted: Features,
    ) -> Result<Features, NegotiationError> {
        let extra = accepted.difference(offered);
        if !extra.is_empty() {
            return Err(NegotiationError::NotOffered { bits: extra });
        }
        if self.version == VersionPolicy::Modern && !accepted.contains(Features::VERSION_1) {
            return Err(NegotiationError::Version1Missing);
        }
        match self.rules().find(|rule| rule.is_broken_by(accepted)) {
            Some(rule) => Err(NegotiationError::MissingDependency {
                feature: rule.feature.intersection(accepted),
                requires_one_of: rule.requires_one_of,
            }),
            None => Ok(accepted),
        }
    }

    /// Driver side: from what the device `offered` and what the driver `wants`, the largest
    /// subset that passes [`Negotiator::check`]: features whose dependencies are missing are
    /// dropped (repeatedly, since dropping one can break another).
    pub fn select(&self, offered: Features, wants: Features) -> Result<Features, NegotiationError> {
        let mut accepted = offered.intersection(wants);
        // Each pass either drops at least one bit or stops, so 65 passes always suffice.
        for _ in 0..=u64::BITS {
            let mut dropped = Features::empty();
            for rule in self.rules() {
                if rule.is_broken_by(accepted) {
                    dropped.insert(rule.feature.intersection(accepted));
                }
            }
            if dropped.is_empty() {
                break;
            }
            accepted.remove(dropped);
        }
        self.check(offered, accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BLK_LIKE: &[FeatureDependency] = &[
        // "bit 3 needs bit 1 or bit 2", "bit 4 needs bit 3": a chain and an any-of.
        FeatureDependency::new(1 << 3, (1 << 1) | (1 << 2)),
        FeatureDependency::new(1 << 4, 1 << 3),
    ];

    fn f(bits: u64) -> Features {
        Features::from_bits_retain(bits)
    }

    #[test]
    fn bits_not_offered_are_refused() {
        // virtio 1.2 §2.2.1: the driver MUST NOT accept a feature the device did not offer.
        let n = Negotiator::modern(&[]);
        let offered = Features::VERSION_1;
        let accepted = Features::VERSION_1 | Features::EVENT_IDX;
        assert_eq!(
            n.check(offered, accepted),
            Err(NegotiationError::NotOffered {
                bits: Features::EVENT_IDX
            })
        );
    }

    #[test]
    fn modern_needs_version_1() {
        let n = Negotiator::modern(&[]);
        let offered = Features::VERSION_1 | Features::EVENT_IDX;
        assert_eq!(
            n.check(offered, Features::EVENT_IDX),
            Err(NegotiationError::Version1Missing)
        );
        let legacy = Negotiator::new(&[], VersionPolicy::AllowLegacy);
        assert_eq!(
            legacy.check(offered, Features::EVENT_IDX),
            Ok(Features::EVENT_IDX)
        );
    }

    #[test]
    fn ring_features_need_version_1_even_for_legacy() {
        let legacy = Negotiator::new(&[], VersionPolicy::AllowLegacy);
        let offered = Features::VERSION_1 | Features::RING_PACKED | Features::IN_ORDER;
        assert_eq!(
            legacy.check(offered, Features::RING_PACKED),
            Err(NegotiationError::MissingDependency {
                feature: Features::RING_PACKED,
                requires_one_of: Features::VERSION_1
            })
        );
        assert_eq!(legacy.check(offered, offered), Ok(offered));
    }

    #[test]
    fn device_table_any_of_and_chains() {
        let n = Negotiator::modern(BLK_LIKE);
        let offered = Features::VERSION_1 | f(0b11110);
        assert!(n.check(offered, Features::VERSION_1 | f(1 << 3)).is_err());
        assert!(n
            .check(offered, Features::VERSION_1 | f((1 << 3) | (1 << 2)))
            .is_ok());
        assert!(n
            .check(offered, Features::VERSION_1 | f((1 << 4) | (1 << 1)))
            .is_err());
        // select drops bit 3 (no 1 or 2 wanted), and then bit 4 with it.
        let wants = Features::VERSION_1 | f((1 << 3) | (1 << 4));
        assert_eq!(n.select(offered, wants), Ok(Features::VERSION_1));
    }

    /// Reference model of §2.2.1 for the property test: every rule, checked directly.
    fn model_ok(rules: &[FeatureDependency], offered: u64, accepted: u64) -> bool {
        accepted & !offered == 0
            && accepted & Features::VERSION_1.bits() != 0
            && DEVICE_INDEPENDENT_DEPENDENCIES
                .iter()
                .chain(rules)
                .all(|r| {
                    accepted & r.feature.bits() == 0 || accepted & r.requires_one_of.bits() != 0
                })
    }

    proptest! {
        #[test]
        fn check_matches_the_model(
            offered in any::<u64>(),
            raw in any::<u64>(),
            stray in 0u8..4,
        ) {
            // Mostly subsets of the offer, so the dependency rules get exercised too.
            let accepted = if stray == 0 { raw } else { raw & offered };
            let n = Negotiator::modern(BLK_LIKE);
            let got = n.check(f(offered), f(accepted));
            prop_assert_eq!(got.is_ok(), model_ok(BLK_LIKE, offered, accepted));
            if let Ok(set) = got {
                prop_assert_eq!(set.bits(), accepted);
            }
        }

        #[test]
        fn select_is_valid_and_maximal(offered in any::<u64>(), wants in any::<u64>()) {
            let n = Negotiator::modern(BLK_LIKE);
            match n.select(f(offered), f(wants)) {
                Ok(set) => {
                    prop_assert!(model_ok(BLK_LIKE, offered, set.bits()));
                    prop_assert_eq!(set.bits() & !(offered & wants), 0);
                    // Maximal: adding back any single dropped bit breaks a rule.
                    let dropped = offered & wants & !set.bits();
                    for bit in 0..64 {
                        let b = 1u64 << bit;
                        if dropped & b != 0 {
                            prop_assert!(!model_ok(BLK_LIKE, offered, set.bits() | b));
                        }
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e, NegotiationError::Version1Missing);
                    prop_assert_eq!(offered & wants & Features::VERSION_1.bits(), 0);
                }
            }
        }
    }
}
