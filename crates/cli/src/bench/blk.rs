//! `vireo bench blk`: drive a vhost-user-blk backend with Vireo's frontend and blk driver.
//!
//! Connects as a vhost-user front-end ([`UserDevice`]), negotiates what the driver uses
//! ([`vireo_blk::driver::wanted_features`]), reads the configuration space, then runs one
//! thread per request queue keeping `--qd` requests in flight, and reports IOPS, bandwidth and
//! latency percentiles. With `--verify`, writes carry data that names its own offset and
//! generation and every read is checked (see `pattern`).

#[cfg(test)]
mod audit_args;
mod hist;
mod pattern;
mod state;
mod worker;

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Serialize;
use vireo_blk::driver::{
    wanted_features, BlkDeviceInfo, BlkQueue, NegotiationOptions, SlotArea, SlotOptions,
};
use vireo_queue::RingFormat;
use vireo_spec::blk::{BlkConfig, SECTOR_SIZE};
use vireo_spec::Features;
use vireo_vhost_user::frontend::{FrontendError, UserDevice, UserDeviceOptions};

use hist::Histogram;
use worker::{EventfdKick, Plan, QueueReport, Verify, Wait, Workload};

/// Bytes of configuration space read: everything up to `write_zeroes_may_unmap` and its
/// padding (virtio 1.2 §5.2.4), which every modern backend has; the later fields (secure
/// erase, zoned) are not used.
const CONFIG_READ_LEN: usize = 60;

/// Workload on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RwArg {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
}

/// Arguments of `vireo bench blk`.
#[derive(Debug, Args)]
pub struct BlkBenchArgs {
    /// The backend's Unix socket.
    #[arg(long, required_unless_present = "check_image")]
    socket: Option<PathBuf>,
    /// Workload.
    #[arg(long, value_enum, default_value = "randread")]
    rw: RwArg,
    /// Bytes per request (a multiple of 512; suffixes k, m: 4k, 64k, 1m).
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    /// Requests in flight per queue.
    #[arg(long, default_value_t = 32)]
    qd: u16,
    /// Length of the timed phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Request queues (one thread each).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Use packed virtqueues (VIRTIO_F_RING_PACKED; an error if the backend does not offer it).
    #[arg(long)]
    packed: bool,
    /// Write self-describing data and check every read (read workloads write the region
    /// first; write workloads read back what they wrote).
    #[arg(long)]
    verify: bool,
    /// With --verify: every read must return zeroes (a backend that discards writes, such as
    /// qemu-storage-daemon's null-co with read-zeroes=on).
    #[arg(long, requires = "verify")]
    expect_zeroes: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Bytes of the disk to use from offset 0 (suffixes k, m, g; default: the whole disk up to
    /// 1g).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Descriptors per virtqueue.
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// Busy-poll for completions instead of sleeping on the call eventfd.
    #[arg(long)]
    poll: bool,
    /// Seed of the random offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes per data segment: each request's buffer is split into segments of this size
    /// (default: one segment, or the device's size_max if smaller).
    #[arg(long, value_parser = parse_size)]
    seg_size: Option<u64>,
    /// Seconds without any completion after which the backend counts as hung.
    #[arg(long, default_value_t = 10)]
    stall_seconds: u64,
    /// Instead of a run: scan an image file a verifying run wrote (through the backend) and
    /// check that every 512-byte unit carrying the pattern sits at the offset it names and is
    /// whole; fails if none does.
    #[arg(long, conflicts_with = "socket")]
    check_image: Option<PathBuf>,
}

/// Largest `--bs`: one request's buffer (bigger requests are no benchmark of anything).
const MAX_BS: u64 = 1 << 30;

/// Longest `--seconds` (one day): keeps every deadline representable.
const MAX_SECONDS: f64 = 86_400.0;

/// Most blocks of the region (each has 5 bytes of bookkeeping per run).
const MAX_REGION_BLOCKS: u64 = 1 << 28;

/// Checks the numbers a user gives: `--bs` a positive multiple of 512 up to [`MAX_BS`], `--qd`
/// and `--queues` positive, `--seconds` positive and at most [`MAX_SECONDS`].
fn check_numbers(args: &BlkBenchArgs) -> anyhow::Result<()> {
    let bs = args.bs;
    if bs == 0 || bs % SECTOR_SIZE != 0 || bs > MAX_BS {
        bail!("--bs {bs} is not a positive multiple of 512 of at most 1g");
    }
    if args.qd == 0 || args.queues == 0 {
        bail!("--qd and --queues must be positive");
    }
    // Also refuses NaN.
    if !(args.seconds > 0.0 && args.seconds <= MAX_SECONDS) {
        bail!("--seconds {} is not in (0, {MAX_SECONDS}]", args.seconds);
    }
    Ok(())
}

/// Bytes of the buffer pool: per queue, the request slots (page aligned) and `qd` buffers of
/// `bs` bytes (each page aligned); `None` if that overflows.
fn pool_bytes(slot_area: usize, qd: usize, bs: u64, queues: u16) -> Option<usize> {
    let slots = slot_area.checked_next_multiple_of(4096)?;
    let buf = usize::try_from(bs).ok()?.checked_next_multiple_of(4096)?;
    buf.checked_mul(qd)?
        .checked_add(slots)?
        .checked_mul(usize::from(queues))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (s.get(..i).unwrap_or(""), mult)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Serialize)]
struct Report {
    rw: &'static str,
    bs: u64,
    qd: u16,
    queues: u16,
    packed: bool,
    seconds: f64,
    ios: u64,
    iops: f64,
    bandwidth_mib_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reads_checked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mismatches: Option<u64>,
    features: String,
    capacity_bytes: u64,
    region_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BlkBenchArgs) -> anyhow::Result<()> {
    let socket = match (&args.socket, &args.check_image) {
        (_, Some(image)) => return check_image(image),
        (Some(socket), None) => socket,
        (None, None) => bail!("--socket is required"),
    };
    let bs = args.bs;
    check_numbers(args)?;
    let workload = match args.rw {
        RwArg::Randread => Workload::RandRead,
        RwArg::Randwrite => Workload::RandWrite,
        RwArg::Read => Workload::Read,
        RwArg::Write => Workload::Write,
    };
    let negotiation = NegotiationOptions {
        format: if args.packed {
            RingFormat::Packed
        } else {
            RingFormat::Split
        },
        without: Features::empty(),
    };
    let qd = usize::from(args.qd);
    let mut slot_options = SlotOptions {
        slots: args.qd,
        max_ranges: 1,
        max_data_segments: 1,
    };
    let pool_size =
        pool_bytes(slot_options.area_size(), qd, bs, args.queues).with_context(|| {
            format!(
                "--bs {bs} x --qd {qd} x --queues {} is too large",
                args.queues
            )
        })?;
    let mut required = Features::VERSION_1;
    if args.packed {
        required |= Features::RING_PACKED;
    }
    let options = UserDeviceOptions {
        features: wanted_features(&negotiation),
        required,
        queues: args.queues,
        queue_size: args.queue_size,
        pool_size,
        ..UserDeviceOptions::default()
    };
    let mut device: UserDevice<u16> = match UserDevice::connect(socket, &options) {
        Ok(d) => d,
        Err(FrontendError::FeatureMissing { bits }) if bits & Features::RING_PACKED.bits() != 0 => {
            bail!("--packed: the backend does not offer VIRTIO_F_RING_PACKED (virtio 1.2 §2.8)")
        }
        Err(e) => {
            return Err(e).with_context(|| format!("starting the device at {}", socket.display()))
        }
    };
    let config_bytes = device
        .read_config(0, CONFIG_READ_LEN)
        .context("reading the configuration space")?;
    let config = BlkConfig::parse(&config_bytes).context("parsing the configuration space")?;
    let info = BlkDeviceInfo::new(device.features(), &config)?;
    if usize::from(args.queues) > usize::from(info.num_queues) {
        bail!(
            "--queues {} but the device has {} request queues",
            args.queues,
            info.num_queues
        );
    }
    // A request is three descriptors (header, data, status), or one with indirect tables.
    let per_request = if info.features.contains(Features::INDIRECT_DESC) {
        1
    } else {
        3
    };
    if u32::from(args.qd) * per_request > u32::from(args.queue_size) {
        bail!(
            "--qd {} needs {} descriptors per queue without VIRTIO_F_INDIRECT_DESC; --queue-size \
             is {}",
            args.qd,
            u32::from(args.qd) * per_request,
            args.queue_size
        );
    }
    // The scatter list: segments of --seg-size, at most size_max, at most seg_max of them.
    let mut seg_size = args.seg_size.unwrap_or(bs).min(bs);
    if let Some(size_max) = info.size_max {
        seg_size = seg_size.min(u64::from(size_max));
    }
    if seg_size == 0 {
        bail!("--seg-size must be positive");
    }
    let segments = bs.div_ceil(seg_size);
    let seg_max = info.seg_max.map_or(u64::from(u16::MAX), u64::from);
    if segments > seg_max.min(u64::from(u16::MAX)) {
        bail!("--bs {bs} in segments of {seg_size} bytes is {segments} segments; the device takes {seg_max}");
    }
    slot_options.max_data_segments = u16::try_from(segments)?;
    let capacity = info.capacity_bytes();
    let region = args.size.unwrap_or(capacity.min(1 << 30)).min(capacity);
    let region_blocks = region / bs;
    if region_blocks > MAX_REGION_BLOCKS {
        bail!(
            "the region ({region} bytes) holds {region_blocks} blocks of {bs} bytes, more than \
             the {MAX_REGION_BLOCKS} this tool tracks; use a smaller --size or a larger --bs"
        );
    }
    let min_blocks = u64::from(args.queues) * u64::from(args.qd) * 2;
    if region_blocks < min_blocks {
        bail!(
            "the region ({region} bytes of a {capacity}-byte disk) holds {region_blocks} blocks \
             of {bs} bytes; --queues x --qd x 2 = {min_blocks} are needed"
        );
    }
    let plan = Plan {
        workload,
        bs: usize::try_from(bs)?,
        seg_size: usize::try_from(seg_size)?,
        qd: args.qd,
        duration: Duration::from_secs_f64(args.seconds),
        region_blocks,
        queues: args.queues,
        verify: match (args.verify, args.expect_zeroes) {
            (false, _) => Verify::Off,
            (true, false) => Verify::Pattern,
            (true, true) => Verify::Zeroes,
        },
        wait: if args.poll { Wait::Poll } else { Wait::Notify },
        seed: args.seed,
        stall: Duration::from_secs(args.stall_seconds.max(1)),
    };
    let reports = run_queues(&mut device, info, &slot_options, plan, bs)?;
    let features = format!("{:#x}", device.features().bits());
    if let Err(e) = device.shutdown() {
        eprintln!("warning: shutting the device down: {e}");
    }
    report(args, plan, reports, features, capacity, region)
}

fn run_queues(
    device: &mut UserDevice<u16>,
    info: BlkDeviceInfo,
    slot_options: &SlotOptions,
    plan: Plan,
    bs: u64,
) -> anyhow::Result<Vec<QueueReport>> {
    let (queues, pool) = device.queues_and_pool();
    let mut work = Vec::with_capacity(queues.len());
    for uq in queues.iter_mut() {
        let slots = pool.alloc(slot_options.area_size(), 4096)?;
        let mut bufs = Vec::with_capacity(usize::from(plan.qd));
        for _ in 0..plan.qd {
            bufs.push(pool.alloc(usize::try_from(bs)?, 4096)?);
        }
        let kick = EventfdKick(uq.kick_fd().try_clone_to_owned()?);
        let call = uq.call_fd().try_clone_to_owned()?;
        let index = uq.index();
        let area = SlotArea {
            area: slots.area().clone(),
            guest_addr: slots.guest_addr(),
        };
        let queue = BlkQueue::new(index, uq.queue_mut(), area, info, slot_options)?;
        work.push((index, queue, kick, call, bufs));
    }
    let ready = Barrier::new(work.len());
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|(index, queue, kick, call, bufs)| {
                let ready = &ready;
                s.spawn(move || worker::run(index, queue, kick, call, &bufs, plan, ready))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| QueueReport {
                    first_error: Some("a queue thread panicked".into()),
                    aborted: true,
                    ..QueueReport::default()
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(reports)
}

fn report(
    args: &BlkBenchArgs,
    plan: Plan,
    reports: Vec<QueueReport>,
    features: String,
    capacity: u64,
    region: u64,
) -> anyhow::Result<()> {
    let mut hist = Histogram::default();
    let (mut ios, mut bytes, mut errors, mut mismatches, mut checked) = (0, 0, 0, 0, 0);
    let mut elapsed = Duration::ZERO;
    let mut first_error = None;
    let mut aborted = false;
    for r in &reports {
        hist.merge(&r.hist);
        ios += r.ios;
        bytes += r.bytes;
        errors += r.errors;
        mismatches += r.mismatches;
        checked += r.checked;
        elapsed = elapsed.max(r.elapsed);
        aborted |= r.aborted;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
    }
    // A queue that stopped early counts as an error too.
    errors += reports.iter().filter(|r| r.aborted).count() as u64;
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let us = |ns: u64| ns as f64 / 1000.0;
    let verified = args
        .verify
        .then_some(!aborted && errors == 0 && mismatches == 0 && checked > 0);
    let report = Report {
        rw: match plan.workload {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
        },
        bs: args.bs,
        qd: args.qd,
        queues: args.queues,
        packed: args.packed,
        seconds: elapsed.as_secs_f64(),
        ios,
        iops: ios as f64 / secs,
        bandwidth_mib_s: bytes as f64 / secs / f64::from(1u32 << 20),
        p50_us: us(hist.quantile(0.5)),
        p99_us: us(hist.quantile(0.99)),
        p999_us: us(hist.quantile(0.999)),
        max_us: us(hist.quantile(1.0)),
        errors,
        verified,
        reads_checked: args.verify.then_some(checked),
        mismatches: args.verify.then_some(mismatches),
        features,
        capacity_bytes: capacity,
        region_bytes: region,
        first_error,
    };
    let out = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        text(&report)
    };
    write_stdout(&out)?;
    if let Some(e) = &report.first_error {
        bail!("{e}");
    }
    if report.errors > 0 {
        bail!("{} requests failed", report.errors);
    }
    if report.verified == Some(false) {
        bail!("verification failed ({mismatches} mismatches, {checked} reads checked)");
    }
    Ok(())
}

/// Writes `out` to stdout at once, returning an error where `println!` would panic (a closed
/// pipe: `vireo bench blk ... | head -1`, a full disk).
fn write_stdout(out: &str) -> anyhow::Result<()> {
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())
        .context("writing the report to stdout")
}

/// The text report.
fn text(r: &Report) -> String {
    let mut out = format!(
        "{} bs={} qd={} queues={}{}: {} ios in {:.2}s\n",
        r.rw,
        r.bs,
        r.qd,
        r.queues,
        if r.packed { " packed" } else { "" },
        r.ios,
        r.seconds
    );
    out += &format!(
        "  {:.0} IOPS, {:.1} MiB/s, latency p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} \
         us\n",
        r.iops, r.bandwidth_mib_s, r.p50_us, r.p99_us, r.p999_us, r.max_us
    );
    out += &format!("  errors: {}\n", r.errors);
    if let (Some(v), Some(c), Some(m)) = (r.verified, r.reads_checked, r.mismatches) {
        out += &format!("  verified: {v} ({c} reads checked, {m} mismatches)\n");
    }
    out
}

/// `--check-image`: every unit with the pattern header is whole and where it says it is.
fn check_image(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut in_place, mut other) = (0u64, 0u64, 0u64);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = file.read(buf.get_mut(filled..).unwrap_or(&mut []))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        for unit in buf.get(..filled).unwrap_or(&[]).chunks_exact(pattern::UNIT) {
            match pattern::classify(unit, at) {
                pattern::UnitContent::Other => other += 1,
                pattern::UnitContent::InPlace => in_place += 1,
                pattern::UnitContent::Wrong(m) => bail!("{}: {m}", path.display()),
            }
            at += pattern::UNIT as u64;
        }
        if filled < buf.len() {
            break;
        }
    }
    write_stdout(&format!(
        "{}: {in_place} units carry the pattern, each whole and at its own offset; {other} \
         other units\n",
        path.display()
    ))?;
    if in_place == 0 {
        bail!("{}: no unit carries the pattern", path.display());
    }
    Ok(())
}
