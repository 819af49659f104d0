//! The driver against a real backend over vhost-user (Vireo's front-end): every request type,
//! with the image file checked directly. Needs a backend command, so it is `#[ignore]`d here and
//! run by `tests/e2e/frontend-cells.sh` with `VIREO_PEER_CMD` set to a command template
//! (`{sock}` and `{img}` are replaced), e.g. qemu-storage-daemon's vhost-user-blk export, and
//! `VIREO_PEER_RING=packed` for packed virtqueues.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_blk::driver::{
    negotiate, wanted_features, BlkDeviceInfo, BlkQueue, BlkRange, Completion, NegotiationOptions,
    RequestKind, SlotArea, SlotOptions, Unmap,
};
use vireo_queue::driver::DriverQueue;
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, BlkFeatures, BlkStatus};
use vireo_vhost_user::frontend::{CallWait, UserDevice, UserDeviceOptions};

const IMG_LEN: u64 = 16 << 20;

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    template: &str,
    dir: &std::path::Path,
) -> (Backend, std::path::PathBuf, std::path::PathBuf) {
    let img = dir.join("disk.img");
    let sock = dir.join("vhost.sock");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(IMG_LEN)
        .unwrap();
    let cmd = template
        .replace("{sock}", sock.to_str().unwrap())
        .replace("{img}", img.to_str().unwrap());
    let mut words = cmd.split_whitespace();
    let child = Command::new(words.next().expect("empty VIREO_PEER_CMD"))
        .args(words)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the backend");
    let backend = Backend(child);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "backend did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (backend, sock, img)
}

/// Submits what `submit` adds, kicks, and waits for exactly one completion.
fn one(
    q: &mut BlkQueue<&mut DriverQueue<u16>>,
    kick: &dyn Fn(),
    wait: &dyn Fn() -> CallWait,
    submit: impl FnOnce(&mut BlkQueue<&mut DriverQueue<u16>>),
) -> Completion {
    submit(q);
    if q.kick_prepare().unwrap() {
        kick();
    }
    let t0 = Instant::now();
    loop {
        let mut got = None;
        q.poll_completions(|c| got = Some(c)).unwrap();
        if let Some(c) = got {
            return c;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no completion");
        if !q.enable_notifications().unwrap() {
            wait();
        }
    }
}

#[test]
#[ignore = "needs a backend: VIREO_PEER_CMD (run by tests/e2e/frontend-cells.sh)"]
fn every_request_type_against_a_real_backend() {
    let template = std::env::var("VIREO_PEER_CMD").expect("VIREO_PEER_CMD");
    let dir = tempfile::tempdir().unwrap();
    let (_backend, sock, img) = start(&template, dir.path());
    let packed = std::env::var("VIREO_PEER_RING").is_ok_and(|r| r == "packed");
    let nego = NegotiationOptions {
        format: if packed {
            RingFormat::Packed
        } else {
            RingFormat::Split
        },
        ..NegotiationOptions::default()
    };
    let options = UserDeviceOptions {
        features: wanted_features(&nego),
        queue_size: 64,
        pool_size: 1 << 20,
        ..UserDeviceOptions::default()
    };
    let mut dev: UserDevice<u16> = UserDevice::connect(&sock, &options).unwrap();
    // What the transport accepted is what the driver's own negotiation picks.
    let offered = vireo_spec::Features::from_bits_retain(dev.offered_features() & !(1 << 30));
    assert_eq!(negotiate(offered, &nego).unwrap(), dev.features());
    assert_eq!(
        RingFormat::from_features(dev.features()),
        nego.format,
        "ring format"
    );
    let config = BlkConfig::parse(&dev.read_config(0, 60).unwrap()).unwrap();
    let info = BlkDeviceInfo::new(dev.features(), &config).unwrap();
    assert_eq!(info.capacity_bytes(), IMG_LEN);
    let blk = info.blk_features();

    let (queues, pool) = dev.queues_and_pool();
    let uq = &mut queues[0];
    let kick_fd = uq.kick_fd().try_clone_to_owned().unwrap();
    let call_fd = uq.call_fd().try_clone_to_owned().unwrap();
    let slot_options = SlotOptions {
        slots: 8,
        max_ranges: 1,
        max_data_segments: 8,
    };
    let slots = pool.alloc(slot_options.area_size(), 4096).unwrap();
    let data = pool.alloc(64 << 10, 4096).unwrap();
    let area = SlotArea {
        area: slots.area().clone(),
        guest_addr: slots.guest_addr(),
    };
    let mut q = BlkQueue::new(0, uq.queue_mut(), area, info, &slot_options).unwrap();
    let kick = || {
        rustix::io::write(&kick_fd, &1u64.to_ne_bytes()).unwrap();
    };
    let wait = || {
        let mut fds = [rustix::event::PollFd::new(
            &call_fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        let mut b = [0u8; 8];
        match rustix::io::read(&call_fd, &mut b) {
            Ok(_) => CallWait::Called,
            Err(_) => CallWait::TimedOut,
        }
    };
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + i / 512) as u8).collect();
    data.slice().write(0, &pattern).unwrap();

    // A write in three segments at sector 16, then the image file has it.
    let segs = [
        data.segment(0, 512).unwrap(),
        data.segment(512, 4096).unwrap(),
        data.segment(4608, 3584).unwrap(),
    ];
    let c = one(&mut q, &kick, &wait, |q| {
        q.submit_write(0, 16, &segs).unwrap()
    });
    assert_eq!(
        (c.request, c.status, c.written),
        (RequestKind::Write, BlkStatus::Ok, 1)
    );
    if blk.contains(BlkFeatures::FLUSH) {
        let c = one(&mut q, &kick, &wait, |q| q.submit_flush(1).unwrap());
        assert_eq!((c.request, c.status), (RequestKind::Flush, BlkStatus::Ok));
    }
    let mut on_disk = vec![0u8; 8192];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut on_disk, 16 * 512)
        .unwrap();
    assert!(
        on_disk == pattern,
        "the image does not hold what was written"
    );

    // Read it back in two other segments.
    let segs = [
        data.segment(16384, 1024).unwrap(),
        data.segment(20480, 7168).unwrap(),
    ];
    let c = one(&mut q, &kick, &wait, |q| {
        q.submit_read(2, 16, &segs).unwrap()
    });
    assert_eq!((c.status, c.written), (BlkStatus::Ok, 8193));
    let mut back = vec![0u8; 1024];
    data.slice().read(16384, &mut back).unwrap();
    let mut rest = vec![0u8; 7168];
    data.slice().read(20480, &mut rest).unwrap();
    back.extend(rest);
    assert!(back == pattern, "read back differs");

    // GET_ID: an answer (OK with the id, or UNSUPP), never a broken rule.
    let c = one(&mut q, &kick, &wait, |q| q.submit_get_id(3).unwrap());
    assert_eq!(c.request, RequestKind::GetId);
    if c.status == BlkStatus::Ok {
        let id = c.device_id.unwrap();
        assert!(id.as_bytes().iter().all(|b| b.is_ascii()), "{id:?}");
    }

    // WRITE_ZEROES over the written range: the image then reads zeroes there.
    if blk.contains(BlkFeatures::WRITE_ZEROES) {
        let r = [BlkRange {
            sector: 16,
            num_sectors: 16,
        }];
        let c = one(&mut q, &kick, &wait, |q| {
            q.submit_write_zeroes(4, &r, Unmap::Keep).unwrap()
        });
        assert_eq!(
            (c.request, c.status),
            (RequestKind::WriteZeroes, BlkStatus::Ok)
        );
        std::fs::File::open(&img)
            .unwrap()
            .read_exact_at(&mut on_disk, 16 * 512)
            .unwrap();
        assert!(on_disk.iter().all(|&b| b == 0), "write zeroes left data");
    }
    if blk.contains(BlkFeatures::DISCARD) {
        let r = [BlkRange {
            sector: 64,
            num_sectors: 8,
        }];
        let c = one(&mut q, &kick, &wait, |q| q.submit_discard(5, &r).unwrap());
        assert_eq!((c.request, c.status), (RequestKind::Discard, BlkStatus::Ok));
    }
    assert_eq!(q.in_flight(), 0);
    assert!(!q.is_broken());
    drop(q);
    dev.shutdown().unwrap();
}
