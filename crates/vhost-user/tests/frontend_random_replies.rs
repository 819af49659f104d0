//! Any bytes a back-end sends in reply to `GET_FEATURES`: the front-end returns exactly what a
//! reference model of the reply rules predicts (QEMU `docs/interop/vhost-user.rst`, "Message
//! Specification": version 1, REPLY flag, the request's code, an 8-byte u64), never panics and
//! never waits past the reply timeout. Likewise any payload of a well-framed `GET_CONFIG`
//! reply ("Virtio device config space": the same window, or empty for a refusal).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use proptest::prelude::*;
use vireo_vhost_user::connection::ConnectionError;
use vireo_vhost_user::frontend::{Frontend, FrontendError, FrontendOptions};
use vireo_vhost_user::message::{
    Header, MessageError, ProtocolFeatures, Request, HEADER_SIZE, MAX_CONFIG_SIZE, MAX_PAYLOAD,
};

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

/// What the rules say a well-framed `GET_CONFIG` reply carrying `payload` must produce, for a
/// request of `len` bytes at `offset` ("Virtio device config space").
fn config_model(offset: u32, len: usize, payload: &[u8]) -> Result<Vec<u8>, FrontendError> {
    let request = Request::GET_CONFIG;
    if payload.is_empty() {
        return Err(FrontendError::ConfigRefused { offset, len });
    }
    let field = |at: usize| u32::from_ne_bytes(payload[at..at + 4].try_into().unwrap());
    let bad = |error| FrontendError::BadPayload { request, error };
    if payload.len() < 12 {
        return Err(bad(MessageError::WrongSize {
            expected: 12,
            actual: payload.len(),
        }));
    }
    let (got_offset, size) = (field(0), field(4));
    if size as usize > MAX_CONFIG_SIZE {
        return Err(bad(MessageError::ConfigTooLarge { size }));
    }
    if payload.len() != 12 + size as usize {
        return Err(bad(MessageError::WrongSize {
            expected: 12 + size as usize,
            actual: payload.len(),
        }));
    }
    if got_offset != offset || size as usize != len {
        return Err(FrontendError::Mismatch { request });
    }
    Ok(payload[12..].to_vec())
}

/// A config reply payload: mostly the asked window, sometimes another offset, size or length.
fn config_payload() -> impl Strategy<Value = Vec<u8>> {
    let offset = prop_oneof![4 => Just(4u32), 1 => any::<u32>()];
    let size = prop_oneof![4 => Just(8u32), 1 => 0u32..300, 1 => any::<u32>()];
    let data = proptest::collection::vec(any::<u8>(), 0..300);
    let cut = prop_oneof![3 => Just(usize::MAX), 1 => 0usize..30];
    (offset, size, any::<u32>(), data, cut).prop_map(|(offset, size, flags, data, cut)| {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&offset.to_ne_bytes());
        bytes.extend_from_slice(&size.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        let n = if data.len() >= size as usize {
            size as usize
        } else {
            data.len()
        };
        bytes.extend_from_slice(&data[..n]);
        bytes.truncate(cut);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn config_replies_are_judged_as_the_model_says(payload in config_payload()) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let options = FrontendOptions { reply_timeout: Duration::from_secs(5) };
        let mut fe = Frontend::from_stream(ours, options).unwrap();
        let reply = payload.clone();
        let peer = std::thread::spawn(move || {
            // SET_PROTOCOL_FEATURES (no reply without REPLY_ACK), then GET_CONFIG.
            let mut set = [0u8; HEADER_SIZE + 8];
            theirs.read_exact(&mut set).unwrap();
            let mut get = [0u8; HEADER_SIZE + 12 + 8];
            theirs.read_exact(&mut get).unwrap();
            let header = Header::for_request(Request::GET_CONFIG, reply.len() as u32, 0);
            let header = header.reply(reply.len() as u32);
            theirs.write_all(&header.to_bytes()).unwrap();
            theirs.write_all(&reply).unwrap();
        });
        fe.set_protocol_features(ProtocolFeatures::CONFIG).unwrap();
        let got = fe.get_config(4, 8);
        peer.join().unwrap();
        let expected = config_model(4, 8, &payload);
        // A refusal keeps the connection; every other failure latches it broken.
        prop_assert_eq!(fe.is_broken(), expected.as_ref().is_err_and(|e| !matches!(e, FrontendError::ConfigRefused { .. })));
        prop_assert_eq!(got, expected);
    }
}
