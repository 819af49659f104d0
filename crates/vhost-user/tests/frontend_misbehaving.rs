//! The front-end against a back-end that breaks the rules on purpose: every wrong reply is a
//! clear [`FrontendError`], never a panic or a hang (QEMU `docs/interop/vhost-user.rst`,
//! "Message Specification", "REPLY_ACK").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod frontend_support;

use std::time::{Duration, Instant};

use frontend_support::{eventfd, is, start, Action, REPLY};
use vireo_vhost_user::connection::ConnectionError;
use vireo_vhost_user::frontend::{FrontendError, UserDevice, UserDeviceOptions};
use vireo_vhost_user::message::{
    MessageError, Payload, ProtocolFeatures, Request, VringState, FLAG_NEED_REPLY,
};

const T: Duration = Duration::from_secs(5);

/// `GET_FEATURES` answered by `action`, everything else well.
fn features_reply(action: impl Fn() -> Action + Send + 'static) -> FrontendError {
    let (mut fe, fake) = start(T, move |m| {
        if is(m, Request::GET_FEATURES) {
            action()
        } else {
            Action::Default
        }
    });
    let err = fe.get_features().unwrap_err();
    assert!(fe.is_broken(), "{err}");
    // Once broken, nothing more goes on the wire.
    assert_eq!(fe.get_features(), Err(FrontendError::Broken));
    drop(fe);
    let seen = fake.join();
    assert_eq!(seen, [Request::GET_FEATURES as u32]);
    err
}

#[test]
fn reply_naming_another_request() {
    let err = features_reply(|| Action::Raw {
        code: Request::GET_PROTOCOL_FEATURES as u32,
        flags: REPLY,
        payload: 1u64.to_bytes(),
        fds: vec![],
    });
    assert_eq!(
        err,
        FrontendError::WrongReply {
            request: Request::GET_FEATURES,
            got: Request::GET_PROTOCOL_FEATURES as u32
        }
    );
}

#[test]
fn reply_without_the_reply_flag() {
    let err = features_reply(|| Action::Raw {
        code: Request::GET_FEATURES as u32,
        flags: 1,
        payload: 1u64.to_bytes(),
        fds: vec![],
    });
    assert_eq!(
        err,
        FrontendError::NotAReply {
            request: Request::GET_FEATURES,
            flags: 1
        }
    );
}

#[test]
fn reply_of_the_wrong_size() {
    let err = features_reply(|| Action::Reply(vec![0; 4]));
    assert_eq!(
        err,
        FrontendError::BadPayload {
            request: Request::GET_FEATURES,
            error: MessageError::WrongSize {
                expected: 8,
                actual: 4
            }
        }
    );
}

#[test]
fn reply_cut_short_by_a_close() {
    let err = features_reply(|| Action::Short { size: 8, sent: 3 });
    assert_eq!(
        err,
        FrontendError::Connection {
            request: Request::GET_FEATURES,
            error: ConnectionError::Truncated {
                got: 15,
                expected: 20
            }
        }
    );
}

#[test]
fn reply_with_fds_attached() {
    let err = features_reply(|| Action::Raw {
        code: Request::GET_FEATURES as u32,
        flags: REPLY,
        payload: 1u64.to_bytes(),
        fds: vec![eventfd(), eventfd()],
    });
    assert_eq!(
        err,
        FrontendError::UnexpectedFds {
            request: Request::GET_FEATURES,
            count: 2
        }
    );
}

#[test]
fn close_instead_of_a_reply() {
    let err = features_reply(|| Action::Close);
    assert_eq!(
        err,
        FrontendError::Disconnected {
            request: Request::GET_FEATURES
        }
    );
}

#[test]
fn silence_is_a_timeout_not_a_hang() {
    let (mut fe, fake) = start(Duration::from_millis(200), |_| Action::Silence);
    let t0 = Instant::now();
    assert_eq!(
        fe.get_features(),
        Err(FrontendError::Timeout {
            request: Request::GET_FEATURES
        })
    );
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    drop(fe);
    fake.join();
}

#[test]
fn a_reply_trickled_a_byte_at_a_time_is_one_timeout_not_twenty() {
    // 20 bytes, one every 60 ms: each read alone is inside the 200 ms timeout, the reply
    // (1.2 s) is not. The timeout bounds the whole reply.
    let gap = Duration::from_millis(60);
    let (mut fe, fake) = start(Duration::from_millis(200), move |_| Action::Trickle { gap });
    let t0 = Instant::now();
    assert_eq!(
        fe.get_features(),
        Err(FrontendError::Timeout {
            request: Request::GET_FEATURES
        })
    );
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(1000), "{waited:?}");
    assert!(fe.is_broken());
    drop(fe);
    fake.join();
}

/// A front-end that acknowledged REPLY_ACK (the fake offers it).
fn with_reply_ack(
    policy: impl FnMut(&vireo_vhost_user::connection::Message) -> Action + Send + 'static,
) -> (vireo_vhost_user::frontend::Frontend, frontend_support::Fake) {
    let (mut fe, fake) = start(T, policy);
    fe.set_protocol_features(ProtocolFeatures::REPLY_ACK | ProtocolFeatures::CONFIG)
        .unwrap();
    (fe, fake)
}

#[test]
fn refused_request_reports_the_status_and_keeps_the_connection() {
    // vhost-user.rst "REPLY_ACK": a non-zero u64 reports failure.
    let (mut fe, fake) = with_reply_ack(|m| {
        if is(m, Request::SET_VRING_NUM) {
            assert!(m.header.needs_reply());
            Action::Reply(7u64.to_bytes())
        } else {
            Action::Default
        }
    });
    assert_eq!(
        fe.set_vring_num(0, 128),
        Err(FrontendError::Refused {
            request: Request::SET_VRING_NUM,
            status: 7
        })
    );
    // The stream is in step: the next request works.
    fe.set_vring_base(0, 0).unwrap();
    drop(fe);
    let seen = fake.join();
    assert_eq!(seen.last(), Some(&(Request::SET_VRING_BASE as u32)));
}

#[test]
fn without_reply_ack_no_reply_is_awaited() {
    let (mut fe, fake) = start(T, |m| {
        assert_eq!(m.header.flags & FLAG_NEED_REPLY, 0);
        Action::Default
    });
    fe.set_owner().unwrap();
    fe.set_vring_num(0, 64).unwrap();
    assert_eq!(fe.get_features().unwrap(), frontend_support::FEATURES);
    drop(fe);
    assert_eq!(fake.join().len(), 3);
}

#[test]
fn vring_base_for_another_ring() {
    let (mut fe, fake) = start(T, |m| {
        if is(m, Request::GET_VRING_BASE) {
            Action::Reply(VringState { index: 3, num: 9 }.to_bytes())
        } else {
            Action::Default
        }
    });
    assert_eq!(
        fe.get_vring_base(1),
        Err(FrontendError::Mismatch {
            request: Request::GET_VRING_BASE
        })
    );
    drop(fe);
    fake.join();
}

#[test]
fn config_reply_for_another_window() {
    let (mut fe, fake) = with_reply_ack(|m| {
        if is(m, Request::GET_CONFIG) {
            let mut c = vireo_vhost_user::message::ConfigSpace::parse(&m.payload).unwrap();
            c.payload.pop();
            Action::Reply(c.to_bytes())
        } else {
            Action::Default
        }
    });
    assert_eq!(
        fe.get_config(0, 8),
        Err(FrontendError::Mismatch {
            request: Request::GET_CONFIG
        })
    );
    drop(fe);
    fake.join();
}

#[test]
fn requests_needing_an_unacked_protocol_feature_are_not_sent() {
    let (mut fe, fake) = start(T, |_| Action::Default);
    let missing = |f: ProtocolFeatures| FrontendError::ProtocolFeatureMissing { bits: f.bits() };
    assert_eq!(fe.get_config(0, 8), Err(missing(ProtocolFeatures::CONFIG)));
    assert_eq!(fe.get_queue_num(), Err(missing(ProtocolFeatures::MQ)));
    assert_eq!(
        fe.reset_device(),
        Err(missing(ProtocolFeatures::RESET_DEVICE))
    );
    assert_eq!(fe.get_status(), Err(missing(ProtocolFeatures::STATUS)));
    drop(fe);
    assert!(fake.join().is_empty());
}

/// `UserDevice::start` against a fake whose `GET_QUEUE_NUM` answer is `count`.
fn start_with_queue_num(count: u64) -> Result<UserDevice<u32>, FrontendError> {
    let (fe, fake) = start(T, move |m| {
        if is(m, Request::GET_QUEUE_NUM) {
            Action::Reply(count.to_bytes())
        } else {
            Action::Default
        }
    });
    let r = UserDevice::start(fe, &UserDeviceOptions::default());
    if r.is_err() {
        fake.join();
    }
    r
}

#[test]
fn queue_count_of_zero_or_huge() {
    for count in [0, 1 << 16, u64::MAX] {
        assert_eq!(
            start_with_queue_num(count).unwrap_err(),
            FrontendError::BadQueueCount { count }
        );
    }
    assert!(start_with_queue_num(1).is_ok());
}

#[test]
fn disconnect_in_the_middle_of_setup() {
    for stop_at in [
        Request::GET_PROTOCOL_FEATURES,
        Request::SET_FEATURES,
        Request::SET_MEM_TABLE,
        Request::SET_VRING_ADDR,
        Request::SET_VRING_CALL,
        Request::SET_VRING_ENABLE,
    ] {
        let (fe, fake) = start(T, move |m| {
            if is(m, stop_at) {
                Action::Close
            } else {
                Action::Default
            }
        });
        let err = UserDevice::<u32>::start(fe, &UserDeviceOptions::default()).unwrap_err();
        assert_eq!(
            err,
            FrontendError::Disconnected { request: stop_at },
            "{stop_at:?}"
        );
        let seen = fake.join();
        assert_eq!(seen.last(), Some(&(stop_at as u32)));
    }
}

#[test]
fn missing_version_1_is_refused_before_anything_is_set() {
    let (fe, fake) = start(T, |m| {
        if is(m, Request::GET_FEATURES) {
            Action::Reply((1u64 << 30).to_bytes())
        } else {
            Action::Default
        }
    });
    assert_eq!(
        UserDevice::<u32>::start(fe, &UserDeviceOptions::default()).unwrap_err(),
        FrontendError::FeatureMissing { bits: 1 << 32 }
    );
    assert_eq!(
        fake.join(),
        [Request::SET_OWNER as u32, Request::GET_FEATURES as u32]
    );
}

#[test]
fn features_the_front_end_cannot_carry_are_never_acked() {
    // The fake offers NOTIFICATION_DATA (virtio 1.2 §2.9): an eventfd kick cannot carry it.
    let notification_data = vireo_spec::Features::NOTIFICATION_DATA.bits();
    let (fe, fake) = start(T, move |m| {
        if is(m, Request::GET_FEATURES) {
            Action::Reply((frontend_support::FEATURES | notification_data).to_bytes())
        } else if is(m, Request::SET_FEATURES) {
            let acked = u64::parse(&m.payload).unwrap();
            assert_eq!(acked & notification_data, 0, "{acked:#x}");
            Action::Default
        } else {
            Action::Default
        }
    });
    let options = UserDeviceOptions {
        features: vireo_spec::Features::VERSION_1 | vireo_spec::Features::NOTIFICATION_DATA,
        ..UserDeviceOptions::default()
    };
    let dev = UserDevice::<u32>::start(fe, &options).unwrap();
    assert!(!dev
        .features()
        .contains(vireo_spec::Features::NOTIFICATION_DATA));
    drop(dev);
    assert!(fake.join().contains(&(Request::SET_FEATURES as u32)));

    let (fe, fake) = start(T, |_| Action::Default);
    let options = UserDeviceOptions {
        required: vireo_spec::Features::ACCESS_PLATFORM,
        ..UserDeviceOptions::default()
    };
    assert_eq!(
        UserDevice::<u32>::start(fe, &options).unwrap_err(),
        FrontendError::FeatureUnsupported {
            bits: vireo_spec::Features::ACCESS_PLATFORM.bits()
        }
    );
    fake.join();
}

/// What the fake needs to write into our ring: the shared memory and where the used ring is.
#[derive(Default)]
struct Seen {
    memory: Option<(vireo_memory::SharedArea, u64)>,
    used: Option<u64>,
}

#[test]
fn a_nonsense_used_entry_is_the_queues_error() {
    use std::sync::{Arc, Mutex};
    use vireo_memory::mmap::MmapRegion;
    use vireo_queue::driver::{DeviceViolation, DriverQueueError};
    use vireo_vhost_user::message::{MemoryTable, VringAddr};

    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = Arc::clone(&seen);
    let (fe, fake) = start(T, move |m| {
        let mut s = s.lock().unwrap();
        if is(m, Request::SET_MEM_TABLE) {
            let r = MemoryTable::parse(&m.payload).unwrap().regions[0];
            let map = MmapRegion::map(&m.fds[0], r.mmap_offset, r.size).unwrap();
            s.memory = Some((map.into_area().unwrap(), r.user_addr));
        } else if is(m, Request::SET_VRING_ADDR) {
            s.used = Some(VringAddr::parse(&m.payload).unwrap().used);
        }
        Action::Default
    });
    let options = UserDeviceOptions {
        queue_size: 8,
        ..UserDeviceOptions::default()
    };
    let mut dev = UserDevice::<u32>::start(fe, &options).unwrap();
    let buf = dev.pool_mut().alloc(64, 8).unwrap();
    let q = dev.queue_mut(0).unwrap();
    q.add(&[], &[buf.whole().unwrap()], 1).unwrap();
    q.notify().unwrap();
    {
        // The "device" uses descriptor 5, which was never made available (virtio 1.2 §2.7.8:
        // the id is the head of a chain the driver made available).
        let s = seen.lock().unwrap();
        let (area, user_base) = s.memory.as_ref().unwrap();
        let used = (s.used.unwrap() - user_base) as usize;
        let ring = area.slice().subslice(used, 4 + 8 * 8).unwrap();
        use std::sync::atomic::Ordering::{Relaxed, Release};
        ring.store_u32(4, 5, Relaxed).unwrap();
        ring.store_u32(8, 64, Relaxed).unwrap();
        ring.store_u16(2, 1, Release).unwrap();
    }
    let err = q.pop_used().unwrap_err();
    assert_eq!(
        err,
        FrontendError::Queue {
            index: 0,
            error: DriverQueueError::Device(DeviceViolation::UsedIdNotInFlight { id: 5 })
        }
    );
    // Latched: the queue stays broken.
    assert!(matches!(
        q.pop_used(),
        Err(FrontendError::Queue {
            error: DriverQueueError::Broken(_),
            ..
        })
    ));
    drop(dev);
    fake.join();
}
