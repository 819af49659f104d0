//! No fd outlives a failed or finished front-end session: the memfd, the kick and call
//! eventfds, the socket, and fds a back-end attaches where none belong are all closed. (Its
//! own test binary: no other test opens fds meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod frontend_support;

use std::time::Duration;

use frontend_support::{eventfd, is, open_fds, start, Action, REPLY};
use vireo_vhost_user::frontend::{FrontendError, UserDevice, UserDeviceOptions};
use vireo_vhost_user::message::{Payload, Request};

fn sessions() {
    // Stray fds on a reply.
    let (mut fe, fake) = start(Duration::from_secs(5), |m| {
        if is(m, Request::GET_FEATURES) {
            Action::Raw {
                code: m.header.request,
                flags: REPLY,
                payload: 1u64.to_bytes(),
                fds: (0..8).map(|_| eventfd()).collect(),
            }
        } else {
            Action::Default
        }
    });
    assert!(matches!(
        fe.get_features(),
        Err(FrontendError::UnexpectedFds { count: 8, .. })
    ));
    drop(fe);
    fake.join();

    // Setup failing at each step after memory and eventfds exist.
    for stop_at in [
        Request::SET_MEM_TABLE,
        Request::SET_VRING_KICK,
        Request::SET_VRING_CALL,
        Request::SET_VRING_ENABLE,
    ] {
        let (fe, fake) = start(Duration::from_secs(5), move |m| {
            if is(m, stop_at) {
                Action::Close
            } else {
                Action::Default
            }
        });
        let options = UserDeviceOptions {
            queues: 2,
            ..UserDeviceOptions::default()
        };
        assert!(UserDevice::<u8>::start(fe, &options).is_err());
        fake.join();
    }

    // A silent back-end.
    let (fe, fake) = start(Duration::from_millis(50), |m| {
        if is(m, Request::SET_VRING_ADDR) {
            Action::Silence
        } else {
            Action::Default
        }
    });
    assert!(matches!(
        UserDevice::<u8>::start(fe, &UserDeviceOptions::default()),
        Err(FrontendError::Timeout { .. })
    ));
    fake.join();

    // A full session.
    let (fe, fake) = start(Duration::from_secs(5), |_| Action::Default);
    let dev = UserDevice::<u8>::start(fe, &UserDeviceOptions::default()).unwrap();
    assert_eq!(dev.shutdown().unwrap(), [0]);
    fake.join();
}

#[test]
fn nothing_leaks() {
    sessions();
    let before = open_fds();
    for _ in 0..3 {
        sessions();
    }
    assert_eq!(open_fds(), before);
}
