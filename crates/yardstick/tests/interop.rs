#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Vireo's split driver against rust-vmm's `virtio_queue::Queue` as the device (an
//! implementation we did not write), over `vm_memory::GuestMemoryMmap`: with and without
//! EVENT_IDX (virtio 1.2 §2.7.7, §2.7.10) and INDIRECT_DESC (§2.7.5.3), polling and sleeping on
//! eventfds, every token back exactly once with the right used length and data. The same
//! matrix with Vireo's own device over the same memory, and negative controls showing that a
//! wrong echo or a wrong length from the device is caught.

use vireo_spec::Features;
use vireo_yardstick::{run, run_single_thread, Device, Fault, NotifyKind, Options, YardstickError};

fn feature_sets() -> [Features; 4] {
    [
        Features::empty(),
        Features::EVENT_IDX,
        Features::INDIRECT_DESC,
        Features::EVENT_IDX | Features::INDIRECT_DESC,
    ]
}

/// Runs `device` over every feature set and notification kind; each run wraps a small ring
/// many times, with a batch that does not divide the queue size.
fn matrix(device: Device) {
    for features in feature_sets() {
        for kind in [NotifyKind::Poll, NotifyKind::EventFd] {
            let opts = Options {
                ring_features: features,
                queue_size: 64,
                outstanding: 48,
                batch: 7,
                buffers: match kind {
                    NotifyKind::Poll => 12_000,
                    NotifyKind::EventFd => 6_000,
                },
                notify: kind.mode(),
                fault: None,
            };
            let (kick, call) = kind.pair().expect("eventfds");
            let report = run(&opts, device, kick, call)
                .unwrap_or_else(|e| panic!("{device:?} {features:?} {kind:?}: {e}"));
            assert_eq!(
                report.completed, opts.buffers,
                "{device:?} {features:?} {kind:?}"
            );
            assert!(
                report.verified,
                "{device:?} {features:?} {kind:?}: {report:?}"
            );
            if kind == NotifyKind::EventFd {
                // Every sleep of the driver needed a call from the device.
                assert!(report.calls >= report.driver_sleeps, "{report:?}");
            }
        }
    }
}

#[test]
fn vireo_driver_against_virtio_queue_device() {
    matrix(Device::RustVmm);
}

#[test]
fn vireo_driver_against_vireo_device_over_vm_memory() {
    matrix(Device::Vireo);
}

/// Past 65536 buffers the free-running 16-bit ring indices wrap (virtio 1.2 §2.7.6, §2.7.8), and
/// with EVENT_IDX so do `used_event` and `avail_event` and the "need event" comparison (§2.7.10):
/// both devices, sleeping on eventfds, so every notification decision counts.
#[test]
fn indices_wrap_with_event_idx_and_eventfds() {
    for device in [Device::RustVmm, Device::RustVmmPop, Device::Vireo] {
        let opts = Options {
            ring_features: Features::EVENT_IDX | Features::INDIRECT_DESC,
            queue_size: 32,
            outstanding: 32,
            batch: 5,
            buffers: 70_000,
            notify: NotifyKind::EventFd.mode(),
            fault: None,
        };
        let (kick, call) = NotifyKind::EventFd.pair().expect("eventfds");
        let report = run(&opts, device, kick, call).unwrap_or_else(|e| panic!("{device:?}: {e}"));
        assert!(report.verified, "{device:?}: {report:?}");
        assert!(
            report.calls >= report.driver_sleeps,
            "{device:?}: {report:?}"
        );
    }
}

/// One buffer per batch and the whole ring outstanding: the tightest interleaving.
#[test]
fn batch_of_one_with_the_ring_full() {
    for device in [Device::RustVmm, Device::RustVmmPop, Device::Vireo] {
        let opts = Options {
            ring_features: Features::EVENT_IDX,
            queue_size: 16,
            outstanding: 16,
            batch: 1,
            buffers: 20_000,
            ..Options::default()
        };
        let (kick, call) = NotifyKind::Poll.pair().expect("notifiers");
        let report = run(&opts, device, kick, call).expect("run");
        assert!(report.verified, "{device:?}: {report:?}");
    }
}

/// Negative controls: a device that echoes wrong data or reports a wrong length for one buffer
/// makes the run fail with a verification error naming that buffer.
#[test]
fn a_wrong_echo_or_length_is_caught() {
    for device in [Device::RustVmm, Device::RustVmmPop, Device::Vireo] {
        for (fault, what) in [
            (
                Fault::WrongData { seq: 777 },
                "wrong data in the writable buffer",
            ),
            (Fault::WrongLength { seq: 777 }, "wrong used length"),
        ] {
            let opts = Options {
                buffers: 2_000,
                fault: Some(fault),
                ..Options::default()
            };
            let (kick, call) = NotifyKind::Poll.pair().expect("notifiers");
            match run(&opts, device, kick, call) {
                Err(YardstickError::Verification(m, 777)) => assert_eq!(m, what),
                other => {
                    panic!("{device:?} {fault:?}: expected a verification error, got {other:?}")
                }
            }
        }
    }
}

#[test]
fn packed_and_bad_options_are_refused() {
    let bad = [
        Options {
            ring_features: Features::RING_PACKED,
            ..Options::default()
        },
        Options {
            outstanding: 0,
            ..Options::default()
        },
        Options {
            batch: 0,
            ..Options::default()
        },
    ];
    for opts in bad {
        let (kick, call) = NotifyKind::Poll.pair().expect("notifiers");
        assert!(matches!(
            run(&opts, Device::RustVmm, kick, call),
            Err(YardstickError::Options(_))
        ));
    }
}

/// Both sides on one thread taking turns (what the single-thread benchmark and instruction
/// counts run): every device, every feature set, every token verified.
#[test]
fn single_thread_turns_verify_every_token() {
    for device in [Device::RustVmm, Device::RustVmmPop, Device::Vireo] {
        for features in feature_sets() {
            let opts = Options {
                ring_features: features,
                queue_size: 64,
                outstanding: 40,
                batch: 9,
                buffers: 70_000,
                ..Options::default()
            };
            let report = run_single_thread(&opts, device)
                .unwrap_or_else(|e| panic!("{device:?} {features:?}: {e}"));
            assert!(report.verified, "{device:?} {features:?}: {report:?}");
        }
        let faulty = Options {
            fault: Some(Fault::WrongData { seq: 12_345 }),
            buffers: 20_000,
            ..Options::default()
        };
        assert!(matches!(
            run_single_thread(&faulty, device),
            Err(YardstickError::Verification(_, 12_345))
        ));
    }
}
