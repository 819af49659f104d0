//! The virtio-blk device served by `BackendServer` and driven through Vireo's vhost-user
//! front-end: negotiation, config space, requests on every queue in both ring formats, and the
//! socket removed when the server stops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_blk::device::{BlkDevice, BlkOptions};
use vireo_blk::storage::{device_id_from, RamDisk, Storage};
use vireo_spec::blk::{BlkConfig, BlkFeatures};
use vireo_spec::Features;
use vireo_vhost_user::frontend::{GuestBuffer, UserDevice, UserDeviceOptions};
use vireo_vhost_user::{BackendServer, StopHandle};

const DISK: u64 = 1 << 20;

fn serve(name: &str) -> (std::path::PathBuf, StopHandle, std::thread::JoinHandle<()>) {
    let path = std::env::temp_dir().join(format!("vireo-blk-{}-{name}.sock", std::process::id()));
    let mut server = BackendServer::bind(&path).unwrap();
    let mut disk = RamDisk::new(DISK).unwrap();
    disk.set_device_id(device_id_from("vhost-user-test"));
    let options = BlkOptions {
        num_queues: 2,
        max_queue_size: 64,
        ..BlkOptions::default()
    };
    let device = Arc::new(BlkDevice::new(Arc::new(disk) as Arc<dyn Storage>, options).unwrap());
    let stop = StopHandle::new().unwrap();
    let s = stop.clone();
    let t = std::thread::spawn(move || server.serve(device, &s).unwrap());
    (path, stop, t)
}

/// One request: header, data (readable for OUT, writable otherwise), status; returns
/// (status, written).
fn request(
    dev: &mut UserDevice<u32>,
    queue: u16,
    kind: u32,
    sector: u64,
    data: &GuestBuffer,
) -> (u8, u32) {
    let pool = dev.pool_mut();
    let hdr = pool.alloc(16, 16).unwrap();
    let status = pool.alloc(1, 1).unwrap();
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    hdr.slice().write(0, &h).unwrap();
    status.slice().write(0, &[0xee]).unwrap();
    let q = dev.queue_mut(queue).unwrap();
    let hdr_seg = hdr.whole().unwrap();
    let data_seg = data.whole().unwrap();
    let status_seg = status.whole().unwrap();
    if kind == 1 {
        q.add(&[hdr_seg, data_seg], &[status_seg], kind).unwrap();
    } else {
        q.add(&[hdr_seg], &[data_seg, status_seg], kind).unwrap();
    }
    q.notify().unwrap();
    let t0 = Instant::now();
    let used = loop {
        if let Some(u) = q.pop_used().unwrap() {
            break u;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no used buffer");
        q.wait_call(Duration::from_millis(100)).unwrap();
    };
    let mut s = [0u8];
    status.slice().read(0, &mut s).unwrap();
    (s[0], used.written)
}

fn round_trips(format: Features) {
    let (path, stop, thread) = serve(&format!("{:x}", format.bits()));
    let blk = BlkFeatures::FLUSH | BlkFeatures::SEG_MAX | BlkFeatures::BLK_SIZE | BlkFeatures::MQ;
    let options = UserDeviceOptions {
        features: Features::VERSION_1
            | Features::EVENT_IDX
            | Features::INDIRECT_DESC
            | format
            | blk.to_features(),
        queues: 2,
        queue_size: 64,
        pool_size: 1 << 16,
        ..UserDeviceOptions::default()
    };
    let mut dev = UserDevice::<u32>::connect(&path, &options).unwrap();
    assert!(dev.features().contains(format | Features::VERSION_1));
    let config = BlkConfig::parse(&dev.read_config(0, 60).unwrap()).unwrap();
    assert_eq!(config.capacity, DISK / 512);
    assert_eq!(config.num_queues, 2);
    for queue in 0..2u16 {
        let data = dev.pool_mut().alloc(1024, 512).unwrap();
        data.slice().fill(0, 1024, 0x40 + queue as u8).unwrap();
        assert_eq!(
            request(&mut dev, queue, 1, 8 * u64::from(queue), &data),
            (0, 1)
        );
        data.slice().fill(0, 1024, 0).unwrap();
        assert_eq!(
            request(&mut dev, queue, 0, 8 * u64::from(queue), &data),
            (0, 1025)
        );
        let mut got = vec![0u8; 1024];
        data.slice().read(0, &mut got).unwrap();
        assert_eq!(got, vec![0x40 + queue as u8; 1024]);
        // Beyond the capacity.
        assert_eq!(request(&mut dev, queue, 0, DISK / 512 - 1, &data).0, 1);
    }
    let id = dev.pool_mut().alloc(20, 1).unwrap();
    assert_eq!(request(&mut dev, 1, 8, 0, &id), (0, 21));
    let mut got = [0u8; 20];
    id.slice().read(0, &mut got).unwrap();
    assert_eq!(&got, &device_id_from("vhost-user-test"));
    dev.shutdown().unwrap();
    stop.stop();
    thread.join().unwrap();
    assert!(
        !path.exists(),
        "the socket is removed when the server stops"
    );
}

#[test]
fn split_rings_through_the_backend_server() {
    round_trips(Features::empty());
}

#[test]
fn packed_rings_through_the_backend_server() {
    round_trips(Features::RING_PACKED);
}
