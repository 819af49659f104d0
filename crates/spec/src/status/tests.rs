//! Tests of the status state machine: fixed sequences from §3.1.1 and a property test
//! against a reference model.

use super::*;
use crate::negotiation::FeatureDependency;
use proptest::prelude::*;

const RULES: &[FeatureDependency] = &[FeatureDependency::new(1 << 2, 1 << 1)];

fn device(offered: Features) -> StatusMachine<'static> {
    StatusMachine::new(offered, Negotiator::modern(RULES))
}

fn offer() -> Features {
    Features::VERSION_1 | Features::EVENT_IDX | Features::from_bits_retain(0b110)
}

const ACK: u8 = 1;
const DRV: u8 = 2;
const FOK: u8 = 8;
const DOK: u8 = 4;

#[test]
fn the_normal_sequence_reaches_driver_ok() {
    let mut d = device(offer());
    assert_eq!(d.status(), DeviceStatus::empty());
    assert_eq!(
        d.write_status(ACK),
        Ok(StatusWrite::Advanced(InitStep::Acknowledge))
    );
    assert_eq!(
        d.write_status(ACK | DRV),
        Ok(StatusWrite::Advanced(InitStep::Driver))
    );
    d.write_driver_features(Features::VERSION_1 | Features::EVENT_IDX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.write_status(ACK | DRV | FOK),
        Ok(StatusWrite::Advanced(InitStep::FeaturesOk))
    );
    assert_eq!(
        d.negotiated(),
        Some(Features::VERSION_1 | Features::EVENT_IDX)
    );
    assert!(!d.is_live(), "§2.1.2: nothing before DRIVER_OK");
    assert_eq!(
        d.write_status(ACK | DRV | FOK | DOK),
        Ok(StatusWrite::Advanced(InitStep::DriverOk))
    );
    assert!(d.is_live());
    assert_eq!(d.status().bits(), 15);
}

#[test]
fn steps_out_of_order_are_refused() {
    let mut d = device(offer());
    assert!(matches!(
        d.write_status(DRV),
        Err(StatusError::OutOfOrder { .. })
    ));
    assert!(matches!(
        d.write_status(ACK | DOK),
        Err(StatusError::OutOfOrder { .. })
    ));
    assert_eq!(
        d.status(),
        DeviceStatus::empty(),
        "an error changes nothing"
    );
    d.write_status(ACK | DRV).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        d.write_status(ACK | DRV | DOK),
        Err(StatusError::OutOfOrder { .. })
    ));
    assert_eq!(
        d.write_status(ACK | DRV | FOK),
        Err(StatusError::FeaturesNotWritten)
    );
}

#[test]
fn features_ok_is_refused_for_a_bad_subset_and_stays_clear() {
    // §3.1.1 step 6: the driver re-reads the status and finds FEATURES_OK clear.
    let mut d = device(offer());
    d.write_status(ACK | DRV).unwrap_or_else(|e| panic!("{e}"));
    d.write_driver_features(Features::VERSION_1 | Features::from_bits_retain(1 << 2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        d.write_status(ACK | DRV | FOK),
        Err(StatusError::FeaturesRefused {
            source: NegotiationError::MissingDependency { .. }
        })
    ));
    assert!(!d.status().contains(DeviceStatus::FEATURES_OK));
    d.write_driver_features(Features::VERSION_1 | Features::ACCESS_PLATFORM)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        d.write_status(ACK | DRV | FOK),
        Err(StatusError::FeaturesRefused {
            source: NegotiationError::NotOffered { .. }
        })
    ));
}

#[test]
fn features_only_between_driver_and_features_ok() {
    let mut d = device(offer());
    assert_eq!(
        d.write_driver_features(Features::VERSION_1),
        Err(StatusError::FeaturesAtWrongStep {
            at: InitStep::Reset
        })
    );
    d.write_status(ACK | DRV).unwrap_or_else(|e| panic!("{e}"));
    d.write_driver_features(Features::VERSION_1)
        .unwrap_or_else(|e| panic!("{e}"));
    d.write_status(ACK | DRV | FOK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.write_driver_features(Features::VERSION_1 | Features::EVENT_IDX),
        Err(StatusError::FeaturesAtWrongStep {
            at: InitStep::FeaturesOk
        })
    );
}

#[test]
fn clearing_unknown_failed_and_reset() {
    let mut d = device(offer());
    d.write_status(ACK | DRV).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.write_status(ACK),
        Err(StatusError::ClearedBits {
            bits: DeviceStatus::DRIVER
        })
    );
    assert_eq!(
        d.write_status(ACK | 32),
        Err(StatusError::UnknownBits { bits: 32 })
    );
    assert_eq!(d.write_status(ACK | DRV | 128), Ok(StatusWrite::Failed));
    assert!(d.status().contains(DeviceStatus::FAILED));
    assert_eq!(
        d.write_status(ACK | DRV | FOK | 128),
        Err(StatusError::AfterFailed)
    );
    assert_eq!(d.write_status(0), Ok(StatusWrite::Reset));
    assert_eq!(d.status(), DeviceStatus::empty());
    assert_eq!(d.negotiated(), None);
}

#[test]
fn needs_reset_is_device_owned() {
    let mut d = device(offer());
    assert_eq!(d.set_needs_reset(), ConfigNotification::NotRequired);
    assert_eq!(d.write_status(ACK), Err(StatusError::NeedsReset));
    // The driver writing the bit back (read-modify-write) neither sets nor clears it.
    assert_eq!(d.write_status(64 | 128), Ok(StatusWrite::Failed));
    d.reset();
    for v in [ACK, ACK | DRV] {
        d.write_status(v).unwrap_or_else(|e| panic!("{e}"));
    }
    d.write_driver_features(Features::VERSION_1)
        .unwrap_or_else(|e| panic!("{e}"));
    d.write_status(ACK | DRV | FOK | DOK)
        .unwrap_or_else(|e| panic!("{e}"));
    // §2.1.2: once DRIVER_OK is set the device must notify a configuration change.
    assert_eq!(d.set_needs_reset(), ConfigNotification::Required);
    assert!(!d.is_live());
}

#[test]
fn driver_and_device_agree() {
    let mut dev = device(offer());
    let mut drv = DriverInit::new();
    let n = Negotiator::modern(RULES);
    dev.write_status(drv.reset().bits())
        .unwrap_or_else(|e| panic!("{e}"));
    let v = drv.acknowledge().unwrap_or_else(|e| panic!("{e}"));
    dev.write_status(v.bits()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        drv.features_ok(),
        Err(StatusError::OutOfOrder {
            at: InitStep::Acknowledge,
            bits: DeviceStatus::FEATURES_OK
        })
    );
    let v = drv.driver().unwrap_or_else(|e| panic!("{e}"));
    dev.write_status(v.bits()).unwrap_or_else(|e| panic!("{e}"));
    let wants = Features::VERSION_1 | Features::RING_PACKED | Features::from_bits_retain(1 << 2);
    let set = drv
        .negotiate(dev.offered(), wants, &n)
        .unwrap_or_else(|e| panic!("{e}"));
    // RING_PACKED not offered; bit 2 needs bit 1, which the driver does not want.
    assert_eq!(set, Features::VERSION_1);
    dev.write_driver_features(set)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        drv.driver_ok(),
        Err(StatusError::OutOfOrder {
            at: InitStep::Driver,
            bits: DeviceStatus::DRIVER_OK
        })
    );
    let v = drv.features_ok().unwrap_or_else(|e| panic!("{e}"));
    dev.write_status(v.bits()).unwrap_or_else(|e| panic!("{e}"));
    assert!(drv.driver_ok().is_err(), "FEATURES_OK not yet confirmed");
    assert_eq!(drv.confirm_features_ok(dev.status()), Ok(set));
    let v = drv.driver_ok().unwrap_or_else(|e| panic!("{e}"));
    dev.write_status(v.bits()).unwrap_or_else(|e| panic!("{e}"));
    assert!(dev.is_live());
    assert_eq!(drv.negotiated(), dev.negotiated());
}

#[test]
fn driver_notices_refused_features() {
    let mut drv = DriverInit::new();
    let n = Negotiator::modern(&[]);
    drv.acknowledge()
        .and_then(|_| drv.driver())
        .unwrap_or_else(|e| panic!("{e}"));
    drv.negotiate(Features::VERSION_1, Features::all(), &n)
        .unwrap_or_else(|e| panic!("{e}"));
    drv.features_ok().unwrap_or_else(|e| panic!("{e}"));
    let back = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER;
    assert_eq!(
        drv.confirm_features_ok(back),
        Err(StatusError::FeaturesOkNotKept { read_back: back })
    );
    assert_eq!(drv.fail().bits(), 128 | 11);
    assert_eq!(drv.driver_ok(), Err(StatusError::AfterFailed));
    assert_eq!(drv.reset(), DeviceStatus::empty());
    assert_eq!(drv.acknowledge().map(|s| s.bits()), Ok(1));
}

/// Operations a driver (or a broken one) can do.
#[derive(Debug, Clone)]
enum Op {
    Status(u8),
    Features(u64),
    NeedsReset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Mostly meaningful values: prefixes of the sequence, with or without FAILED.
        prop::sample::select(vec![
            0u8,
            1,
            3,
            11,
            15,
            2,
            4,
            8,
            9,
            131,
            139,
            64 | 3,
            32 | 1,
            16 | 15
        ])
        .prop_map(Op::Status),
        any::<u8>().prop_map(Op::Status),
        (any::<u8>(), any::<bool>()).prop_map(|(low, v1)| {
            Op::Features(u64::from(low & 0b111) | if v1 { Features::VERSION_1.bits() } else { 0 })
        }),
        Just(Op::NeedsReset),
    ]
}

/// Reference model: the status byte as a plain number, and the rules of §2.1 / §3.1.1 stated
/// directly on it.
#[derive(Debug, Clone, Default)]
struct Model {
    status: u8,
    accepted: Option<u64>,
}

impl Model {
    fn features_valid(&self, offered: u64) -> bool {
        match self.accepted {
            Some(a) => {
                a & !offered == 0
                    && a & Features::VERSION_1.bits() != 0
                    && (a & 0b100 == 0 || a & 0b010 != 0)
            }
            None => false,
        }
    }

    /// Applies `op`; returns whether it should succeed.
    fn apply(&mut self, op: &Op, offered: u64) -> bool {
        const PREFIXES: [u8; 5] = [0, 1, 3, 11, 15];
        match *op {
            Op::NeedsReset => {
                self.status |= 64;
                true
            }
            Op::Features(f) => {
                let ok = self.status & 128 == 0 && self.status & 15 == 3;
                if ok {
                    self.accepted = Some(f);
                }
                ok
            }
            Op::Status(0) => {
                *self = Model::default();
                true
            }
            Op::Status(v) => {
                let steps = v & 15;
                let cur = self.status & 15;
                let ok = if v & 32 != 0 {
                    false
                } else if self.status & 128 != 0 {
                    v & 128 != 0 && steps & !cur == 0
                } else if v & 128 != 0 {
                    true
                } else if steps == cur {
                    cur & !steps == 0
                } else {
                    cur & !steps == 0
                        && self.status & 64 == 0
                        && PREFIXES.contains(&steps)
                        && (cur & 8 != 0 || steps & 8 == 0 || self.features_valid(offered))
                };
                if ok {
                    if v & 128 != 0 {
                        self.status |= 128;
                    } else {
                        self.status = (self.status & !15) | steps;
                    }
                }
                ok
            }
        }
    }
}

proptest! {
    #[test]
    fn machine_matches_the_model(ops in prop::collection::vec(op(), 0..40)) {
        let offered = offer();
        let mut dev = device(offered);
        let mut model = Model::default();
        for op in &ops {
            let before = dev.clone();
            let got = match *op {
                Op::Status(v) => dev.write_status(v).map(|_| ()),
                Op::Features(f) => dev.write_driver_features(Features::from_bits_retain(f)),
                Op::NeedsReset => {
                    dev.set_needs_reset();
                    Ok(())
                }
            };
            let want = model.apply(op, offered.bits());
            prop_assert_eq!(got.is_ok(), want, "op {:?} from {:?}", op, before.status());
            prop_assert_eq!(dev.status().bits(), model.status, "after {:?}", op);
            if got.is_err() {
                prop_assert_eq!(dev.status(), before.status());
            }
            // Invariant: live implies a negotiated set that passes the checker.
            if dev.status().contains(DeviceStatus::DRIVER_OK) {
                let set = dev.negotiated();
                prop_assert!(set.is_some());
                if let Some(set) = set {
                    prop_assert!(Negotiator::modern(RULES).check(offered, set).is_ok());
                }
            }
        }
    }
}
