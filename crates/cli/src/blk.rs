//! `vireo blk`: a virtio-blk device daemon over vhost-user.
//!
//! Serves a raw image (`--image`) or a RAM disk (`--size`) on a Unix socket, one front-end at
//! a time: when one disconnects the device is reset and the next may connect. SIGINT and
//! SIGTERM stop the server and remove the socket (QEMU `docs/interop/vhost-user.rst`,
//! "Backend program conventions"). Logs go to stderr, filtered by `RUST_LOG` (default
//! `info`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vireo_blk::device::{BlkDevice, BlkOptions, CachePolicy, RingFormats};
use vireo_blk::storage::{
    device_id_from, Access, CacheMode, FileDisk, FileOptions, IoBackend, RamDisk, Storage,
};
use vireo_vhost_user::{BackendServer, StopHandle};

/// RAM disk size when neither `--image` nor `--size` is given.
const DEFAULT_RAM_SIZE: u64 = 256 << 20;

/// Arguments of `vireo blk`.
#[derive(Debug, Args)]
pub struct BlkArgs {
    /// Unix socket to listen on (a stale socket file there is replaced).
    #[arg(long)]
    socket: PathBuf,
    /// Raw image file or block device to serve (its size is the disk's size).
    #[arg(long, conflicts_with = "size")]
    image: Option<PathBuf>,
    /// Size of a RAM disk (without --image): bytes, or with a K, M, G or T suffix (powers of
    /// 1024). Default 256M.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Refuse writes (the device offers VIRTIO_BLK_F_RO).
    #[arg(long)]
    read_only: bool,
    /// Number of request queues (VIRTIO_BLK_F_MQ above 1).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Largest queue size accepted (a power of two, 4 to 32768; the front-end cannot learn it,
    /// so keep it at least QEMU's 1024).
    #[arg(long, default_value_t = 1024)]
    queue_size: u16,
    /// The serial the guest reads (VIRTIO_BLK_T_GET_ID), up to 20 bytes.
    #[arg(long, value_parser = parse_serial)]
    serial: Option<String>,
    /// Use synchronous I/O instead of io_uring.
    #[arg(long)]
    no_io_uring: bool,
    /// Open the image with O_DIRECT (bypassing the host page cache).
    #[arg(long, requires = "image")]
    direct: bool,
    /// Start in writethrough mode (every write flushed before it completes).
    #[arg(long)]
    writethrough: bool,
    /// Do not offer packed virtqueues (VIRTIO_F_RING_PACKED).
    #[arg(long)]
    split_only: bool,
}

/// Parses `4096`, `512K`, `256M`, `2G`, `1T` (suffixes are powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (s.get(..i).unwrap_or(""), shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("{s:?} is not a size: {e}"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("size {s:?} is zero or too large"))
}

/// Sets up `tracing` on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A GET_ID serial: at most 20 bytes (virtio 1.2 §5.2.6: the id string is 20 bytes), refused
/// rather than cut short.
fn parse_serial(s: &str) -> Result<String, String> {
    if s.len() > vireo_blk::storage::DEVICE_ID_LEN {
        return Err(format!(
            "{} bytes; a virtio-blk serial has at most {}",
            s.len(),
            vireo_blk::storage::DEVICE_ID_LEN
        ));
    }
    Ok(s.to_owned())
}

/// Opens the storage the arguments describe.
fn open_storage(args: &BlkArgs) -> anyhow::Result<Arc<dyn Storage>> {
    let access = if args.read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let id = args.serial.as_deref().map(device_id_from);
    let storage: Arc<dyn Storage> = match &args.image {
        Some(path) => {
            let cache = if args.direct {
                CacheMode::Direct { alignment: 512 }
            } else {
                CacheMode::PageCache
            };
            let options = FileOptions {
                access,
                cache,
                device_id: id,
            };
            let disk = FileDisk::open(path, &options)
                .with_context(|| format!("opening image {}", path.display()))?;
            Arc::new(disk)
        }
        None => {
            let size = args.size.unwrap_or(DEFAULT_RAM_SIZE);
            let mut disk = RamDisk::with_access(size, access)
                .with_context(|| format!("allocating a RAM disk of {size} bytes"))?;
            if let Some(id) = id {
                disk.set_device_id(id);
            }
            Arc::new(disk)
        }
    };
    Ok(storage)
}

/// Serves the device until SIGINT or SIGTERM.
pub fn run(args: &BlkArgs) -> anyhow::Result<()> {
    init_logging();
    let storage = open_storage(args)?;
    let capacity = storage.capacity();
    let options = BlkOptions {
        num_queues: args.queues,
        max_queue_size: args.queue_size,
        cache: if args.writethrough {
            CachePolicy::WriteThrough
        } else {
            CachePolicy::WriteBack
        },
        io_backend: if args.no_io_uring {
            IoBackend::Synchronous
        } else {
            IoBackend::Auto
        },
        rings: if args.split_only {
            RingFormats::SplitOnly
        } else {
            RingFormats::SplitAndPacked
        },
        ..BlkOptions::default()
    };
    let device = Arc::new(BlkDevice::new(storage, options)?);

    let stop = StopHandle::new().context("creating the stop eventfd")?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let on_signal = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping");
                on_signal.stop();
            }
        })
        .context("starting the signal thread")?;

    let mut server = BackendServer::bind(&args.socket)
        .with_context(|| format!("listening on {}", args.socket.display()))?;
    tracing::info!(
        socket = %args.socket.display(),
        capacity,
        queues = args.queues,
        read_only = args.read_only,
        "vireo blk listening"
    );
    server.serve(device, &stop).context("serving")?;
    drop(server); // removes the socket
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn serials_longer_than_twenty_bytes_are_refused() {
        assert_eq!(super::parse_serial("vireo-0001").unwrap(), "vireo-0001");
        assert!(super::parse_serial(&"x".repeat(20)).is_ok());
        assert!(super::parse_serial(&"x".repeat(21)).is_err());
    }

    use super::parse_size;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
