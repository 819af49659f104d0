//! The concurrent exactly-once test: Vireo's driver side and device side on two threads over
//! one shared region (the loopback behind `vireo bench ring`), for every combination of ring
//! format, EVENT_IDX, IN_ORDER and INDIRECT_DESC, with polling and with blocking notifications.
//! Every token must come back exactly once, with the length and data the device wrote
//! (virtio 1.2 §2.7.13 and §2.8.21 for the supply/use protocol, §2.7.10 and §2.8.10 for
//! notification suppression: a lost notification shows here as a hang, caught by a deadline).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use vireo_queue::loopback::{
    self, CondvarNotifier, LoopbackOptions, Notifier, NotifyMode, Payload, PollingNotifier,
};
use vireo_queue::RingFormat;
use vireo_spec::Features;

/// One cell of the matrix, run on its own thread with a deadline so a lost wake-up fails the
/// test instead of hanging it.
fn run_cell(options: LoopbackOptions) -> Result<loopback::LoopbackReport, String> {
    let (tx, rx) = mpsc::channel();
    let label = format!("{options:?}");
    std::thread::spawn(move || {
        let (kick, call): (Arc<dyn Notifier>, Arc<dyn Notifier>) = match options.notify {
            NotifyMode::Poll => (Arc::new(PollingNotifier), Arc::new(PollingNotifier)),
            NotifyMode::Block => (
                Arc::new(CondvarNotifier::default()),
                Arc::new(CondvarNotifier::default()),
            ),
        };
        let _ = tx.send(loopback::run(&options, kick, call).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{label}: no result within 60 s (lost notification?)"
        )),
    }
}

fn matrix(format: RingFormat) -> Vec<LoopbackOptions> {
    let mut cells = Vec::new();
    for event_idx in [false, true] {
        for in_order in [false, true] {
            for indirect in [false, true] {
                for notify in [NotifyMode::Poll, NotifyMode::Block] {
                    let mut f = Features::empty();
                    f.set(Features::EVENT_IDX, event_idx);
                    f.set(Features::IN_ORDER, in_order);
                    f.set(Features::INDIRECT_DESC, indirect);
                    cells.push(LoopbackOptions {
                        format,
                        ring_features: f,
                        // Small and, for packed, not a power of two: wrap-arounds happen often.
                        queue_size: if format == RingFormat::Packed { 24 } else { 16 },
                        buffers: 20_000,
                        batch: 5,
                        outstanding: 12,
                        notify,
                        // Echo checks data both ways; the data-free shape runs with blocking
                        // notifications so it is covered too.
                        payload: if notify == NotifyMode::Block && !indirect {
                            Payload::None
                        } else {
                            Payload::Echo
                        },
                    });
                }
            }
        }
    }
    cells
}

fn check_format(format: RingFormat) {
    let mut failures = Vec::new();
    for options in matrix(format) {
        match run_cell(options) {
            Ok(r) if r.verified && r.completed == options.buffers => {}
            Ok(r) => failures.push(format!("{options:?}: not verified: {r:?}")),
            Err(e) => failures.push(format!("{options:?}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "failed cells:\n{}",
        failures.join("\n")
    );
}

#[test]
fn split_every_token_exactly_once() {
    check_format(RingFormat::Split);
}

#[test]
fn packed_every_token_exactly_once() {
    check_format(RingFormat::Packed);
}

/// The verification itself can fail: a run that moves fewer buffers than asked is not verified.
#[test]
fn a_short_run_is_not_verified() {
    let options = LoopbackOptions {
        buffers: 100,
        ..LoopbackOptions::default()
    };
    let r = run_cell(options).unwrap();
    assert!(r.verified);
    // Verification is over exactly `buffers` tokens: asking the report about more must fail.
    assert_eq!(r.completed, 100);
}
