//! Any bytes a back-end sends in reply to `GET_FEATURES`: the front-end returns exactly what a
//! reference model of the reply rules predicts (QEMU `docs/interop/vhost-user.rst`, "Message
//! Specification": version 1, REPLY flag, the request's code, an 8-byte u64), never panics and
//! never waits past the reply timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use proptest::prelude::*;
use vireo_vhost_user::connection::ConnectionError;
use vireo_vhost_user::frontend::{Frontend, FrontendError, FrontendOptions};
use vireo_vhost_user::message::{MessageError, Request, HEADER_SIZE, MAX_PAYLOAD};

/// What the reply rules say `bytes` (then end of stream) must produce.
fn model(bytes: &[u8]) -> Result<u64, FrontendError> {
    let request = Request::GET_FEATURES;
    let field = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    if bytes.is_empty() {
        return Err(FrontendError::Disconnected { request });
    }
    let truncated = |got, expected| FrontendError::Connection {
        request,
        error: ConnectionError::Truncated { got, expected },
    };
    if bytes.len() < HEADER_SIZE {
        return Err(truncated(bytes.len(), HEADER_SIZE));
    }
    let (code, flags, size) = (field(0), field(4), field(8));
    let bad_header = |error| FrontendError::Connection {
        request,
        error: ConnectionError::Message(error),
    };
    if flags & 3 != 1 {
        return Err(bad_header(MessageError::BadVersion { flags }));
    }
    if size as usize > MAX_PAYLOAD {
        return Err(bad_header(MessageError::PayloadTooLarge { size }));
    }
    let expected = HEADER_SIZE + size as usize;
    if bytes.len() < expected {
        return Err(truncated(bytes.len(), expected));
    }
    if code != request as u32 {
        return Err(FrontendError::WrongReply { request, got: code });
    }
    if flags & 4 == 0 {
        return Err(FrontendError::NotAReply { request, flags });
    }
    let payload = &bytes[HEADER_SIZE..expected];
    match <[u8; 8]>::try_from(payload) {
        Ok(b) => Ok(u64::from_ne_bytes(b)),
        Err(_) => Err(FrontendError::BadPayload {
            request,
            error: MessageError::WrongSize {
                expected: 8,
                actual: payload.len(),
            },
        }),
    }
}

/// A reply that is mostly plausible, with one field or the length off now and then.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![4 => Just(1u32), 1 => any::<u32>()];
    let flags = prop_oneof![4 => Just(5u32), 1 => 0u32..16, 1 => any::<u32>()];
    let size = prop_oneof![4 => Just(8u32), 1 => 0u32..24, 1 => any::<u32>()];
    let payload = proptest::collection::vec(any::<u8>(), 0..24);
    let cut = prop_oneof![3 => Just(usize::MAX), 1 => 0usize..40];
    (code, flags, size, payload, cut).prop_map(|(code, flags, size, payload, cut)| {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&size.to_ne_bytes());
        bytes.extend_from_slice(&payload);
        bytes.truncate(cut);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn replies_are_judged_as_the_model_says(bytes in reply()) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let options = FrontendOptions { reply_timeout: Duration::from_secs(5) };
        let mut fe = Frontend::from_stream(ours, options).unwrap();
        let reply = bytes.clone();
        let peer = std::thread::spawn(move || {
            let mut request = [0u8; HEADER_SIZE];
            theirs.read_exact(&mut request).unwrap();
            theirs.write_all(&reply).unwrap();
            // Closing ends a short reply.
        });
        let got = fe.get_features();
        peer.join().unwrap();
        prop_assert_eq!(got, model(&bytes));
    }
}
