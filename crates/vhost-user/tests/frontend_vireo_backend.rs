//! The front-end against Vireo's own back-end, in process (the echo device of
//! `tests/common`: 2 queues, 16 bytes of config, every chain used with its whole writable
//! length filled with 0xab).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_spec::Features;
use vireo_vhost_user::frontend::{
    Frontend, FrontendError, RingEnable, UserDevice, UserDeviceOptions,
};
use vireo_vhost_user::message::{ConfigAccess, ProtocolFeatures, Request};
use vireo_vhost_user::{BackendServer, ConfigError, QueueHandler, StopHandle, VhostUserDevice};

/// The echo device, also offering the ring features (virtio 1.2 §6).
struct RingFeatures(common::EchoDevice);

impl VhostUserDevice for RingFeatures {
    fn features(&self) -> u64 {
        self.0.features()
            | (Features::RING_PACKED | Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }
    fn num_queues(&self) -> u16 {
        self.0.num_queues()
    }
    fn max_queue_size(&self) -> u16 {
        self.0.max_queue_size()
    }
    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), ConfigError> {
        self.0.read_config(offset, buf)
    }
    fn write_config(&self, offset: u32, data: &[u8], a: ConfigAccess) -> Result<(), ConfigError> {
        self.0.write_config(offset, data, a)
    }
    fn queue_handler(&self, queue_index: u16) -> Box<dyn QueueHandler> {
        self.0.queue_handler(queue_index)
    }
    fn reset(&self) {
        self.0.reset()
    }
}

/// Serves [`RingFeatures`] on a fresh socket until the returned stop handle fires.
fn serve_ring_features(
    name: &str,
) -> (std::path::PathBuf, StopHandle, std::thread::JoinHandle<()>) {
    let path = std::env::temp_dir().join(format!("vireo-fe-{}-{name}.sock", std::process::id()));
    let mut server = BackendServer::bind(&path).unwrap();
    let stop = StopHandle::new().unwrap();
    let s = stop.clone();
    let device = Arc::new(RingFeatures(common::EchoDevice::default()));
    let t = std::thread::spawn(move || server.serve(device, &s).unwrap());
    (path, stop, t)
}

fn options(queues: u16) -> UserDeviceOptions {
    UserDeviceOptions {
        features: Features::VERSION_1 | Features::EVENT_IDX | Features::INDIRECT_DESC,
        queues,
        queue_size: 64,
        pool_size: 1 << 16,
        ..UserDeviceOptions::default()
    }
}

/// Sends `n` buffers of 3 segments (one readable, two writable) on `queue` and checks each
/// comes back with its token, its written length and the device's bytes.
fn echo(dev: &mut UserDevice<usize>, queue: u16, n: usize) {
    let pool = dev.pool_mut();
    let bufs: Vec<_> = (0..3).map(|_| pool.alloc(100, 8).unwrap()).collect();
    let q = dev.queue_mut(queue).unwrap();
    for token in 0..n {
        bufs[1].slice().fill(0, 100, 0).unwrap();
        bufs[2].slice().fill(0, 100, 0).unwrap();
        q.add(
            &[bufs[0].segment(0, 10).unwrap()],
            &[bufs[1].segment(0, 30).unwrap(), bufs[2].whole().unwrap()],
            token,
        )
        .unwrap();
        q.notify().unwrap();
        let t0 = Instant::now();
        let used = loop {
            if let Some(used) = q.pop_used().unwrap() {
                break used;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no used buffer");
            q.wait_call(Duration::from_millis(100)).unwrap();
        };
        assert_eq!((used.token, used.written), (token, 130));
        let mut got = [0u8; 100];
        bufs[1].slice().read(0, &mut got).unwrap();
        assert!(got[..30].iter().all(|&b| b == 0xab) && got[30..].iter().all(|&b| b == 0));
        bufs[2].slice().read(0, &mut got).unwrap();
        assert!(got.iter().all(|&b| b == 0xab));
    }
}

#[test]
fn round_trips_on_every_queue_then_orderly_teardown() {
    let server = common::Server::start();
    server.device.config.lock().unwrap()[4..8].copy_from_slice(b"vire");
    let mut dev = UserDevice::<usize>::connect(&server.path, &options(0)).unwrap();
    assert_eq!(dev.num_queues(), 2);
    assert!(dev
        .protocol_features()
        .contains(ProtocolFeatures::REPLY_ACK | ProtocolFeatures::STATUS));
    assert_eq!(dev.read_config(4, 4).unwrap(), b"vire");
    echo(&mut dev, 0, 5);
    echo(&mut dev, 1, 3);
    assert_eq!(dev.frontend_mut().get_status().unwrap(), 0x0f);
    assert_eq!(dev.shutdown().unwrap(), [5, 3]);
    assert_eq!(server.device.chains.load(Ordering::SeqCst), 8);
}

#[test]
fn backend_errors_surface_as_refusals() {
    let server = common::Server::start();
    let mut dev = UserDevice::<usize>::connect(&server.path, &options(1)).unwrap();
    let fe: &mut Frontend = dev.frontend_mut();
    // A ring the device does not have (REPLY_ACK status, "REPLY_ACK").
    assert!(matches!(
        fe.set_vring_enable(9, RingEnable::Enabled),
        Err(FrontendError::Refused {
            request: Request::SET_VRING_ENABLE,
            ..
        })
    ));
    // Out of the echo device's 16 config bytes: refused with an empty reply ("Virtio device
    // config space"), and the session goes on.
    assert_eq!(
        fe.get_config(8, 16),
        Err(FrontendError::ConfigRefused { offset: 8, len: 16 })
    );
    assert_eq!(fe.get_config(0, 2).unwrap(), [0, 0]);
    // RESET_DEVICE (protocol feature RESET_DEVICE) resets the device and disables the rings.
    let resets = server.device.resets.load(Ordering::SeqCst);
    fe.reset_device().unwrap();
    assert_eq!(server.device.resets.load(Ordering::SeqCst), resets + 1);
}

#[test]
fn more_queues_than_the_device_has() {
    let server = common::Server::start();
    assert_eq!(
        UserDevice::<usize>::connect(&server.path, &options(3)).unwrap_err(),
        FrontendError::TooFewQueues {
            wanted: 3,
            available: 2
        }
    );
    // The back-end is still serving.
    let mut dev = UserDevice::<usize>::connect(&server.path, &options(1)).unwrap();
    echo(&mut dev, 0, 1);
    assert_eq!(dev.shutdown().unwrap(), [1]);
}

#[test]
fn packed_rings_with_event_idx_and_indirect() {
    let (path, stop, thread) = serve_ring_features("packed");
    let mut o = options(2);
    o.features |= Features::RING_PACKED;
    let mut dev = UserDevice::<usize>::connect(&path, &o).unwrap();
    assert!(dev
        .features()
        .contains(Features::RING_PACKED | Features::EVENT_IDX | Features::INDIRECT_DESC));
    echo(&mut dev, 0, 40);
    echo(&mut dev, 1, 70);
    // Packed GET_VRING_BASE: position and wrap counter of avail (low half) and used (high
    // half); 70 buffers on a 64-entry ring wrapped once (wrap counter back to 0).
    let bases = dev.shutdown().unwrap();
    assert_eq!(bases[0] & 0xffff, 0x8000 | 40, "{bases:x?}");
    assert_eq!(bases[1] & 0xffff, 70 - 64, "{bases:x?}");
    stop.stop();
    thread.join().unwrap();
}

#[test]
fn one_thread_per_queue() {
    let (path, stop, thread) = serve_ring_features("threads");
    let mut dev = UserDevice::<usize>::connect(&path, &options(2)).unwrap();
    let (queues, pool) = dev.queues_and_pool();
    let bufs: Vec<_> = queues.iter().map(|_| pool.alloc(64, 64).unwrap()).collect();
    std::thread::scope(|s| {
        for (q, buf) in queues.iter_mut().zip(&bufs) {
            s.spawn(move || {
                for token in 0..200 {
                    q.add(&[], &[buf.whole().unwrap()], token).unwrap();
                    q.notify().unwrap();
                    let used = loop {
                        if let Some(u) = q.pop_used().unwrap() {
                            break u;
                        }
                        q.wait_call(Duration::from_millis(100)).unwrap();
                    };
                    assert_eq!((used.token, used.written), (token, 64));
                }
            });
        }
    });
    assert_eq!(dev.shutdown().unwrap(), [200, 200]);
    stop.stop();
    thread.join().unwrap();
}
