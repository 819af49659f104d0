//! The front-end against a back-end we did not write: qemu-storage-daemon's vhost-user-blk
//! export (QEMU's libvhost-user), over a 1 GiB null device with 4 queues. Skips, saying so,
//! when `qemu-storage-daemon` is not installed (CI installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_spec::blk::{BlkConfig, BlkFeatures, BlkStatus, RequestHeader, RequestType};
use vireo_spec::Features;
use vireo_vhost_user::frontend::{
    CallWait, Frontend, FrontendError, FrontendOptions, UserDevice, UserDeviceOptions,
    WANTED_PROTOCOL_FEATURES,
};
use vireo_vhost_user::message::{ProtocolFeatures, VHOST_USER_F_PROTOCOL_FEATURES};

const QSD: &str = "qemu-storage-daemon";
/// 1 GiB in 512-byte sectors (virtio 1.2 §5.2.4: capacity counts 512-byte sectors).
const CAPACITY_SECTORS: u64 = (1 << 30) / 512;

/// A running qemu-storage-daemon, killed on drop.
struct Qsd {
    child: Child,
    path: PathBuf,
}

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the daemon, or `None` (with a message) when it is not installed.
fn start_qsd(name: &str) -> Option<Qsd> {
    if Command::new(QSD).arg("--version").output().is_err() {
        eprintln!("SKIPPED: {QSD} is not installed (apt-get install qemu-system-common)");
        return None;
    }
    let path =
        std::env::temp_dir().join(format!("vireo-fe-qsd-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let export = format!(
        "type=vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path={},writable=on,num-queues=4",
        path.display()
    );
    let child = Command::new(QSD)
        .args([
            "--blockdev",
            "driver=null-co,node-name=disk,size=1073741824,read-zeroes=on",
            "--export",
            &export,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn qemu-storage-daemon");
    let mut qsd = Qsd { child, path };
    let t0 = Instant::now();
    while !qsd.path.exists() {
        // (QEMU 7.2's null-co takes the size in bytes only, hence no "1G" above.)
        let exited = qsd.child.try_wait().unwrap();
        assert!(exited.is_none(), "{QSD} exited: {exited:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no socket from {QSD}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(qsd)
}

/// Connects, retrying while the daemon finishes starting to listen.
fn connect(qsd: &Qsd) -> UnixStream {
    let t0 = Instant::now();
    loop {
        match UnixStream::connect(&qsd.path) {
            Ok(s) => return s,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn probe_sees_capacity_and_four_queues() {
    let Some(qsd) = start_qsd("probe") else {
        return;
    };
    let mut fe = Frontend::from_stream(connect(&qsd), FrontendOptions::default()).unwrap();
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    assert_ne!(features & Features::VERSION_1.bits(), 0, "{features:#x}");
    assert_ne!(
        features & VHOST_USER_F_PROTOCOL_FEATURES,
        0,
        "{features:#x}"
    );
    let offered = fe.get_protocol_features().unwrap();
    for needed in [
        ProtocolFeatures::MQ,
        ProtocolFeatures::CONFIG,
        ProtocolFeatures::REPLY_ACK,
    ] {
        assert!(offered.contains(needed), "{offered:?}");
    }
    fe.set_protocol_features(offered & WANTED_PROTOCOL_FEATURES)
        .unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 4);
    let config = BlkConfig::parse(&fe.get_config(0, 60).unwrap()).unwrap();
    assert_eq!(config.capacity, CAPACITY_SECTORS);
    assert_eq!(config.num_queues, 4);
    assert!(config.blk_size >= 512, "{config:?}");
    // A config read the daemon refuses is an error, not a hang or a panic, and the session
    // goes on.
    assert_eq!(
        fe.get_config(0, 255),
        Err(FrontendError::ConfigRefused {
            offset: 0,
            len: 255
        })
    );
    assert_eq!(fe.get_queue_num().unwrap(), 4);
}

/// Fills a READ of sector 0 and checks the daemon's answer (virtio 1.2 §5.2.6).
fn read_sector_zero(dev: &mut UserDevice<u32>, queue: u16) {
    let pool = dev.pool_mut();
    let header = pool.alloc(16, 16).unwrap();
    let data = pool.alloc(512, 512).unwrap();
    let status = pool.alloc(1, 1).unwrap();
    data.slice().fill(0, 512, 0xee).unwrap();
    status.slice().fill(0, 1, 0xff).unwrap();
    let mut h = [0u8; 16];
    RequestHeader {
        request_type: RequestType::In.as_u32(),
        reserved: 0,
        sector: 0,
    }
    .emit(&mut h)
    .unwrap();
    header.slice().write(0, &h).unwrap();
    let q = dev.queue_mut(queue).unwrap();
    q.add(
        &[header.whole().unwrap()],
        &[data.whole().unwrap(), status.whole().unwrap()],
        7,
    )
    .unwrap();
    q.notify().unwrap();
    let t0 = Instant::now();
    let used = loop {
        if let Some(used) = q.pop_used().unwrap() {
            break used;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no used buffer");
        let _: CallWait = q.wait_call(Duration::from_millis(100)).unwrap();
    };
    assert_eq!(used.token, 7);
    assert_eq!(used.written, 513);
    let mut st = [0u8; 1];
    status.slice().read(0, &mut st).unwrap();
    assert_eq!(st[0], BlkStatus::Ok.as_u8());
    let mut back = [0xffu8; 512];
    data.slice().read(0, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0), "read-zeroes=on");
}

#[test]
fn user_device_reads_and_tears_down() {
    let Some(qsd) = start_qsd("device") else {
        return;
    };
    let options = UserDeviceOptions {
        features: Features::VERSION_1
            | Features::EVENT_IDX
            | Features::INDIRECT_DESC
            | (BlkFeatures::SEG_MAX | BlkFeatures::BLK_SIZE | BlkFeatures::FLUSH).to_features(),
        queues: 4,
        queue_size: 128,
        pool_size: 1 << 16,
        ..UserDeviceOptions::default()
    };
    let fe = Frontend::from_stream(connect(&qsd), options.frontend).unwrap();
    let mut dev = UserDevice::<u32>::start(fe, &options).unwrap();
    assert_eq!(dev.num_queues(), 4);
    assert_eq!(dev.max_queues(), 4);
    assert!(dev.features().contains(Features::VERSION_1));
    let config = BlkConfig::parse(&dev.read_config(0, 60).unwrap()).unwrap();
    assert_eq!(config.capacity, CAPACITY_SECTORS);
    read_sector_zero(&mut dev, 0);
    read_sector_zero(&mut dev, 3);
    read_sector_zero(&mut dev, 3);
    // GET_VRING_BASE reports how many requests each ring consumed.
    assert_eq!(dev.shutdown().unwrap(), [1, 0, 0, 2]);

    // The daemon serves the next front-end after an orderly teardown.
    let fe = Frontend::from_stream(connect(&qsd), options.frontend).unwrap();
    let mut dev = UserDevice::<u32>::start(fe, &options).unwrap();
    read_sector_zero(&mut dev, 1);
    assert_eq!(dev.shutdown().unwrap(), [0, 1, 0, 0]);
}
