//! Random message streams (any request code, payload, fd count and flags) never bring the
//! server down: after each hostile session, the next front-end is served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use proptest::prelude::*;
use vireo_vhost_user::message::{Header, Payload, Request, FLAG_NEED_REPLY};

#[derive(Debug, Clone)]
struct RawMessage {
    code: u32,
    need_reply: bool,
    payload: Vec<u8>,
    fds: usize,
}

fn message() -> impl Strategy<Value = RawMessage> {
    (
        prop_oneof![0..45u32, any::<u32>()],
        any::<bool>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::collection::vec(any::<u8>(), 0..300)
        ],
        0..4usize,
    )
        .prop_map(|(code, need_reply, payload, fds)| RawMessage {
            code,
            need_reply,
            payload,
            fds,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_streams_never_take_the_server_down(
        prefix_negotiation in any::<bool>(),
        msgs in proptest::collection::vec(message(), 1..16),
    ) {
        let server = Server::start();
        {
            let fe = server.connect();
            if prefix_negotiation {
                fe.negotiate();
            }
            for m in &msgs {
                let fds: Vec<_> = (0..m.fds).map(|_| eventfd()).collect();
                let flags = 1 | if m.need_reply { FLAG_NEED_REPLY } else { 0 };
                let header = Header { request: m.code, flags, size: m.payload.len() as u32 };
                // The server may have closed the connection already: a failed send is fine.
                if fe.conn.send(&header, &m.payload, &borrowed(&fds)).is_err() {
                    break;
                }
            }
        }
        let fe = server.connect();
        prop_assert_eq!(u64::parse(&fe.get(Request::GET_QUEUE_NUM, &[])).unwrap(), 2);
    }
}
