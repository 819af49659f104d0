//! `vireo probe`: connect to any vhost-user backend and print what it offers: virtio features
//! and protocol features (named), queue count, memory slots, and the device's config space.
//!
//! The sequence is the start of a front-end session (QEMU `docs/interop/vhost-user.rst`,
//! "Communication"): `SET_OWNER`, `GET_FEATURES`, `GET_PROTOCOL_FEATURES` and
//! `SET_PROTOCOL_FEATURES`, then `GET_QUEUE_NUM` (MQ), `GET_MAX_MEM_SLOTS`
//! (CONFIGURE_MEM_SLOTS), `GET_CONFIG` (CONFIG). No memory is shared and no ring is started;
//! closing the connection resets the backend for its next front-end.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use vireo_spec::blk::BlkConfig;
use vireo_spec::names::{feature_names, FeatureName};
use vireo_spec::{DeviceId, Features};
use vireo_vhost_user::frontend::{Frontend, FrontendOptions, WANTED_PROTOCOL_FEATURES};
use vireo_vhost_user::message::{ProtocolFeatures, VHOST_USER_F_PROTOCOL_FEATURES};

/// Bytes of virtio-blk config space probe reads: every field through
/// `write_zeroes_may_unmap` and its padding (virtio 1.2 §5.2.4; the layout virtio 1.1 defines
/// and every backend we know serves). Later fields (secure erase, zoned) are not read: older
/// backends refuse a longer read.
const BLK_CONFIG_LEN: usize = 60;

/// The device type behind the socket (the protocol does not say, so probe is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// virtio-blk: name block feature bits and decode the config space (capacity, limits).
    Blk,
    /// Unknown type: name only device-independent bits; no config space decoding.
    Other,
}

/// Arguments of `vireo probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The backend's Unix socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The device type, which vhost-user does not carry: it decides how feature bits 0-23 are
    /// named and how the config space is decoded. `blk` (the default) reads 60 bytes of
    /// virtio-blk config space; `other` names only device-independent bits and reads none.
    #[arg(long, value_enum, default_value = "blk")]
    device: DeviceArg,
    /// Seconds to wait for each reply before giving up.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

/// What the backend offers.
#[derive(Debug)]
struct Probe {
    features: u64,
    protocol: Option<ProtocolFeatures>,
    queues: Option<u64>,
    max_mem_slots: Option<u64>,
    blk: Option<BlkConfig>,
}

fn probe(args: &ProbeArgs) -> anyhow::Result<Probe> {
    let options = FrontendOptions {
        reply_timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let mut fe = Frontend::connect_with(&args.socket, options)
        .with_context(|| format!("connecting to {}", args.socket.display()))?;
    fe.set_owner()?;
    let features = fe.get_features()?;
    let mut out = Probe {
        features,
        protocol: None,
        queues: None,
        max_mem_slots: None,
        blk: None,
    };
    if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
        return Ok(out);
    }
    let offered = fe.get_protocol_features()?;
    out.protocol = Some(offered);
    fe.set_protocol_features(offered & WANTED_PROTOCOL_FEATURES)?;
    if offered.contains(ProtocolFeatures::MQ) {
        out.queues = Some(fe.get_queue_num()?);
    }
    if offered.contains(ProtocolFeatures::CONFIGURE_MEM_SLOTS) {
        out.max_mem_slots = Some(fe.get_max_mem_slots()?);
    }
    if args.device == DeviceArg::Blk && offered.contains(ProtocolFeatures::CONFIG) {
        let bytes = fe.get_config(0, BLK_CONFIG_LEN)?;
        out.blk = Some(BlkConfig::parse(&bytes).context("decoding the virtio-blk config")?);
    }
    Ok(out)
}

/// Names of the set bits of a virtio feature word; bits 26 and 30 are vhost's own.
fn virtio_names(features: u64, device: Option<DeviceId>) -> Vec<String> {
    feature_names(Features::from_bits_retain(features), device)
        .map(|n| {
            match n {
                _ if 1u64 << n.bit() == VHOST_USER_F_PROTOCOL_FEATURES => {
                    "VHOST_USER_F_PROTOCOL_FEATURES".to_owned()
                }
                // The kernel vhost ABI's "dirty log supported" bit (linux/vhost.h), which
                // vhost-user back-ends offer for live migration.
                FeatureName::Unknown { bit: 26 } => "VHOST_F_LOG_ALL".to_owned(),
                n => n.to_string(),
            }
        })
        .collect()
}

/// Names of the set bits of a protocol feature word ("Protocol features").
fn protocol_names(p: ProtocolFeatures) -> Vec<String> {
    let mut names: Vec<String> = p
        .iter_names()
        .map(|(n, _)| format!("VHOST_USER_PROTOCOL_F_{n}"))
        .collect();
    let unknown = p.bits() & !ProtocolFeatures::all().bits();
    names.extend(
        (0..64)
            .filter(|b| unknown & (1u64 << b) != 0)
            .map(|b| format!("bit {b}")),
    );
    names
}

fn blk_json(c: &BlkConfig) -> Value {
    json!({
        "capacity_sectors": c.capacity,
        "blk_size": c.blk_size,
        "size_max": c.size_max,
        "seg_max": c.seg_max,
        "num_queues": c.num_queues,
        "writeback": c.writeback,
        "max_discard_sectors": c.max_discard_sectors,
        "max_discard_seg": c.max_discard_seg,
        "discard_sector_alignment": c.discard_sector_alignment,
        "max_write_zeroes_sectors": c.max_write_zeroes_sectors,
        "max_write_zeroes_seg": c.max_write_zeroes_seg,
        "write_zeroes_may_unmap": c.write_zeroes_may_unmap,
    })
}

fn device_id(args: &ProbeArgs) -> Option<DeviceId> {
    match args.device {
        DeviceArg::Blk => Some(DeviceId::Block),
        DeviceArg::Other => None,
    }
}

fn to_json(p: &Probe, args: &ProbeArgs) -> Value {
    json!({
        "socket": args.socket.display().to_string(),
        "features": p.features,
        "feature_names": virtio_names(p.features, device_id(args)),
        "protocol_features": p.protocol.map(|f| f.bits()),
        "protocol_feature_names": p.protocol.map(protocol_names).unwrap_or_default(),
        "queues": p.queues,
        "max_mem_slots": p.max_mem_slots,
        "config": p.blk.as_ref().map(blk_json),
    })
}

/// The text report (one string, written at once: see [`run`]).
fn text(p: &Probe, args: &ProbeArgs) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! say {
        ($($t:tt)*) => {{
            let _ = writeln!(out, $($t)*);
        }};
    }
    say!("backend: {}", args.socket.display());
    say!("features: {:#018x}", p.features);
    for name in virtio_names(p.features, device_id(args)) {
        say!("  {name}");
    }
    match p.protocol {
        Some(proto) => {
            say!("protocol features: {:#x}", proto.bits());
            for name in protocol_names(proto) {
                say!("  {name}");
            }
        }
        None => say!("protocol features: not offered"),
    }
    match p.queues {
        Some(n) => say!("queues: {n}"),
        None => say!("queues: not reported (no MQ)"),
    }
    if let Some(n) = p.max_mem_slots {
        say!("max mem slots: {n}");
    }
    if let Some(c) = &p.blk {
        say!("virtio-blk config:");
        let bytes = c.capacity.saturating_mul(vireo_spec::blk::SECTOR_SIZE);
        say!(
            "  capacity: {} sectors of 512 bytes ({bytes} bytes)",
            c.capacity
        );
        say!("  blk_size: {}", c.blk_size);
        say!("  size_max: {}", c.size_max);
        say!("  seg_max: {}", c.seg_max);
        say!("  num_queues: {}", c.num_queues);
        say!(
            "  discard: max {} sectors, {} segments, alignment {}",
            c.max_discard_sectors,
            c.max_discard_seg,
            c.discard_sector_alignment
        );
        say!(
            "  write zeroes: max {} sectors, {} segments, may unmap {}",
            c.max_write_zeroes_sectors,
            c.max_write_zeroes_seg,
            c.write_zeroes_may_unmap
        );
    }
    out
}

/// Probes the backend and prints the result.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let p = probe(args)?;
    let out = if args.json {
        format!("{}\n", to_json(&p, args))
    } else {
        text(&p, args)
    };
    // `println!` panics when stdout is closed early (`vireo probe | head -1`); this reports it.
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())
        .context("writing the report to stdout")
}

#[cfg(test)]
#[path = "audit_probe.rs"]
mod audit_probe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_30_is_named_as_vhost_user_s() {
        let word = (1 << 30) | (1 << 32) | (1 << 9) | (1 << 26);
        let names = virtio_names(word, Some(DeviceId::Block));
        assert_eq!(
            names,
            [
                "VIRTIO_BLK_F_FLUSH",
                "VHOST_F_LOG_ALL",
                "VHOST_USER_F_PROTOCOL_FEATURES",
                "VIRTIO_F_VERSION_1"
            ]
        );
    }

    #[test]
    fn protocol_names_keep_unknown_bits() {
        let p = ProtocolFeatures::MQ | ProtocolFeatures::from_bits_retain(1 << 40);
        assert_eq!(protocol_names(p), ["VHOST_USER_PROTOCOL_F_MQ", "bit 40"]);
    }

    /// Against qemu-storage-daemon (skipped, saying so, when it is not installed): the JSON
    /// has the fields the brief names, capacity in 512-byte sectors and 4 queues.
    #[test]
    #[allow(clippy::unwrap_used, clippy::indexing_slicing)]
    fn probes_qemu_storage_daemon() {
        use std::process::{Command, Stdio};
        if Command::new("qemu-storage-daemon")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: qemu-storage-daemon is not installed");
            return;
        }
        let dir = std::env::temp_dir();
        let socket = dir.join(format!("vireo-probe-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let export = format!(
            "type=vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path={},num-queues=4",
            socket.display()
        );
        let mut child = Command::new("qemu-storage-daemon")
            .args([
                "--blockdev",
                "driver=null-co,node-name=disk,size=1073741824",
            ])
            .args(["--export", &export])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let args = ProbeArgs {
            socket: socket.clone(),
            json: true,
            device: DeviceArg::Blk,
            timeout: 5,
        };
        let mut result = probe(&args);
        for _ in 0..200 {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            result = probe(&args);
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&socket);
        let v = to_json(&result.unwrap(), &args);
        assert_eq!(v["queues"], 4);
        assert_eq!(v["config"]["capacity_sectors"], 2_097_152);
        assert_eq!(v["config"]["num_queues"], 4);
        assert!(v["config"]["seg_max"].as_u64().is_some());
        assert!(v["config"]["size_max"].as_u64().is_some());
        assert!(v["config"]["blk_size"].as_u64().unwrap() >= 512);
        let names = v["feature_names"].as_array().unwrap();
        assert!(names.iter().any(|n| n == "VIRTIO_F_VERSION_1"), "{names:?}");
        let proto = v["protocol_feature_names"].as_array().unwrap();
        assert!(
            proto.iter().any(|n| n == "VHOST_USER_PROTOCOL_F_MQ"),
            "{proto:?}"
        );
        assert!(v["features"].as_u64().unwrap() & (1 << 32) != 0);
        assert!(v["protocol_features"].as_u64().is_some());
    }
}
