//! `vireo probe` against a back-end that reports the largest numbers its messages can carry:
//! every feature and protocol bit, u64::MAX queues and memory slots, a config space of 0xff
//! bytes (capacity u64::MAX sectors). Probe must report them as they are, never overflow
//! (capacity in bytes saturates), and the JSON must carry the raw values.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::os::unix::net::UnixListener;

use vireo_vhost_user::connection::Connection;
use vireo_vhost_user::message::{ConfigSpace, Header, Payload, Request};

use super::*;

/// Serves one connection, answering every request with the largest values.
fn extreme_backend(listener: UnixListener) {
    let (stream, _) = listener.accept().unwrap();
    let conn = Connection::new(stream);
    while let Ok(Some(msg)) = conn.recv() {
        let h = msg.header;
        let reply: Option<Vec<u8>> = match h.known_request() {
            Some(
                Request::GET_FEATURES
                | Request::GET_PROTOCOL_FEATURES
                | Request::GET_QUEUE_NUM
                | Request::GET_MAX_MEM_SLOTS,
            ) => Some(u64::MAX.to_bytes()),
            Some(Request::GET_CONFIG) => {
                let asked = ConfigSpace::parse(&msg.payload).unwrap();
                let answer = ConfigSpace {
                    payload: vec![0xff; asked.payload.len()],
                    ..asked
                };
                Some(answer.to_bytes())
            }
            _ if h.needs_reply() => Some(0u64.to_bytes()),
            _ => None,
        };
        if let Some(body) = reply {
            let header: Header = h.reply(body.len() as u32);
            conn.send(&header, &body, &[]).unwrap();
        }
    }
}

#[test]
fn the_largest_values_a_backend_can_report_are_printed_as_they_are() {
    let dir = tempfile_dir();
    let socket = dir.join("extreme.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || extreme_backend(listener));
    let args = ProbeArgs {
        socket: socket.clone(),
        json: false,
        device: DeviceArg::Blk,
        timeout: 5,
    };
    let p = probe(&args).unwrap();
    server.join().unwrap();
    let _ = std::fs::remove_file(&socket);

    assert_eq!(p.features, u64::MAX);
    assert_eq!(p.queues, Some(u64::MAX));
    assert_eq!(p.max_mem_slots, Some(u64::MAX));
    let out = text(&p, &args);
    assert!(
        out.contains(&format!(
            "capacity: {} sectors of 512 bytes ({} bytes)",
            u64::MAX,
            u64::MAX
        )),
        "{out}"
    );
    assert!(out.contains(&format!("queues: {}", u64::MAX)), "{out}");
    assert!(out.contains("bit 63"), "{out}");
    let v = to_json(&p, &args);
    assert_eq!(v["config"]["capacity_sectors"], u64::MAX);
    assert_eq!(v["config"]["num_queues"], u64::from(u16::MAX));
    assert_eq!(v["feature_names"].as_array().unwrap().len(), 64);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vireo-audit-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
