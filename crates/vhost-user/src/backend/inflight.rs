//! Inflight I/O tracking (QEMU `docs/interop/vhost-user.rst`, "Inflight I/O tracking",
//! `VHOST_USER_GET_INFLIGHT_FD`, `VHOST_USER_SET_INFLIGHT_FD`, protocol feature
//! `INFLIGHT_SHMFD`): a shared region in which the back-end records which descriptors are in
//! flight, so that after a crash or restart it can resubmit them.
//!
//! The back-end allocates the region (`GET_INFLIGHT_FD`: a sealed memfd, zeroed); the
//! front-end keeps the fd and sends it back after a reconnect (`SET_INFLIGHT_FD`). The region
//! holds one queue region per queue, each `queue_stride(queue_size)` bytes; the split layout
//! and its protocol live in [`split`].
//!
//! Packed rings: the region is allocated and accepted with the packed layout's size, but
//! nothing is recorded in it (Vireo implements the split layout only), so a restarted back-end
//! serving a packed ring resubmits nothing: requests in flight at a crash are lost, as without
//! `INFLIGHT_SHMFD`. Refusing the messages instead would make QEMU fail to start the device
//! (it asks for the region whenever the protocol feature was negotiated, which happens before
//! the ring format is known).

pub(crate) mod split;

use std::os::fd::OwnedFd;

use rustix::fs::{MemfdFlags, SealFlags};
use vireo_memory::mmap::MmapRegion;
use vireo_memory::SharedArea;
use vireo_queue::RingFormat;
use vireo_spec::split::MAX_QUEUE_SIZE;

use super::RequestError;
use crate::message::Inflight;

/// Queue regions start at multiples of this (what libvhost-user uses too).
const ALIGN: u64 = 64;

/// Bytes of one queue region for `queue_size` descriptors, in `format`'s layout: the header
/// and one descriptor state per descriptor, rounded up to [`ALIGN`].
pub(crate) fn queue_stride(format: RingFormat, queue_size: u16) -> u64 {
    let (header, desc) = match format {
        RingFormat::Split => (split::HEADER_SIZE as u64, split::DESC_SIZE as u64),
        // `QueueRegionPacked` (32 bytes with its padding) and `DescStatePacked` (32 bytes).
        RingFormat::Packed => (32, 32),
    };
    (header + desc * u64::from(queue_size)).div_ceil(ALIGN) * ALIGN
}

/// A mapped inflight region.
#[derive(Debug)]
pub(crate) struct InflightRegion {
    area: SharedArea,
    num_queues: u16,
    queue_size: u16,
    format: RingFormat,
}

impl InflightRegion {
    /// Checks a front-end's inflight description against the device: 1 to `max_queues`
    /// queues of 1 to `max_queue_size` (at most 32768) descriptors. Returns the region size.
    fn check(
        d: &Inflight,
        format: RingFormat,
        max_queues: u16,
        max_queue_size: u16,
    ) -> Result<u64, RequestError> {
        if d.num_queues == 0 || d.num_queues > max_queues {
            return Err(RequestError::InflightQueues {
                num_queues: d.num_queues,
                max: max_queues,
            });
        }
        let max = max_queue_size.min(MAX_QUEUE_SIZE);
        if d.queue_size == 0 || d.queue_size > max {
            return Err(RequestError::InflightQueueSize {
                queue_size: d.queue_size,
                max,
            });
        }
        Ok(queue_stride(format, d.queue_size) * u64::from(d.num_queues))
    }

    /// `GET_INFLIGHT_FD`: a fresh zeroed region for `request` (its size and offset fields are
    /// ignored), in a memfd sealed against shrinking and growing (so that no one can make our
    /// mapping fault). Returns the fd to send, the region, and the reply.
    pub(crate) fn allocate(
        request: &Inflight,
        format: RingFormat,
        max_queues: u16,
        max_queue_size: u16,
    ) -> Result<(OwnedFd, Self, Inflight), RequestError> {
        let size = Self::check(request, format, max_queues, max_queue_size)?;
        let errno = |e: rustix::io::Errno| RequestError::Resource {
            errno: e.raw_os_error(),
        };
        let fd = rustix::fs::memfd_create(
            "vireo-inflight",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(errno)?;
        // A new memfd reads as zeros: the region starts zeroed ("version 0: uninitialized").
        rustix::fs::ftruncate(&fd, size).map_err(errno)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(errno)?;
        let area = MmapRegion::map(&fd, 0, size)?.into_area()?;
        let reply = Inflight {
            mmap_size: size,
            mmap_offset: 0,
            num_queues: request.num_queues,
            queue_size: request.queue_size,
        };
        let region = InflightRegion {
            area,
            num_queues: request.num_queues,
            queue_size: request.queue_size,
            format,
        };
        Ok((fd, region, reply))
    }

    /// `SET_INFLIGHT_FD`: maps the region `d` describes in `fd`. The size must be exactly
    /// what `GET_INFLIGHT_FD` gives for these queues, the file long enough, and sealed against
    /// shrinking (a region that can shrink under our mapping would fault).
    pub(crate) fn map(
        d: &Inflight,
        fd: OwnedFd,
        format: RingFormat,
        max_queues: u16,
        max_queue_size: u16,
    ) -> Result<Self, RequestError> {
        let size = Self::check(d, format, max_queues, max_queue_size)?;
        if d.mmap_size != size {
            return Err(RequestError::InflightSize {
                expected: size,
                actual: d.mmap_size,
            });
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(SealFlags::empty());
        if !seals.contains(SealFlags::SHRINK) {
            return Err(RequestError::InflightNotSealed);
        }
        let area = MmapRegion::map_checked(&fd, d.mmap_offset, size)?.into_area()?;
        Ok(InflightRegion {
            area,
            num_queues: d.num_queues,
            queue_size: d.queue_size,
            format,
        })
    }

    /// The layout the region was made for.
    pub(crate) fn format(&self) -> RingFormat {
        self.format
    }

    /// Queue `index`'s region, when the region has one and the ring has the size it was made
    /// for (`None` otherwise: the ring runs without a record).
    pub(crate) fn queue(&self, index: u16, ring_size: u16) -> Option<split::QueueRecord> {
        if self.format != RingFormat::Split || index >= self.num_queues {
            return None;
        }
        if ring_size != self.queue_size {
            tracing::warn!(
                queue = index,
                ring_size,
                region_size = self.queue_size,
                "inflight region made for another queue size: not tracking this ring"
            );
            return None;
        }
        let stride = queue_stride(RingFormat::Split, self.queue_size);
        let offset = usize::try_from(stride * u64::from(index)).ok()?;
        let area = self.area.sub_area(offset, stride as usize).ok()?;
        split::QueueRecord::new(area, self.queue_size)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(num_queues: u16, queue_size: u16) -> Inflight {
        Inflight {
            num_queues,
            queue_size,
            ..Inflight::default()
        }
    }

    #[test]
    fn strides_follow_the_layouts() {
        // 16-byte header + 16 bytes per descriptor, rounded up to 64.
        assert_eq!(queue_stride(RingFormat::Split, 1), 64);
        assert_eq!(queue_stride(RingFormat::Split, 3), 64);
        assert_eq!(queue_stride(RingFormat::Split, 4), 128);
        assert_eq!(queue_stride(RingFormat::Split, 128), 2112);
        assert_eq!(queue_stride(RingFormat::Split, 32768), 524_352);
        assert_eq!(queue_stride(RingFormat::Packed, 128), 4160);
    }

    #[test]
    fn get_then_set_round_trips_and_bad_descriptions_are_refused() {
        let (fd, region, reply) =
            InflightRegion::allocate(&request(2, 128), RingFormat::Split, 4, 256).unwrap();
        assert_eq!(reply.mmap_size, 2 * 2112);
        assert_eq!((reply.num_queues, reply.queue_size), (2, 128));
        assert!(region.queue(1, 128).is_some());
        assert!(region.queue(2, 128).is_none(), "no third queue");
        assert!(region.queue(0, 64).is_none(), "ring of another size");
        let again = InflightRegion::map(&reply, fd.try_clone().unwrap(), RingFormat::Split, 4, 256);
        assert!(again.is_ok());

        let wrong_size = Inflight {
            mmap_size: reply.mmap_size + 64,
            ..reply
        };
        assert_eq!(
            InflightRegion::map(
                &wrong_size,
                fd.try_clone().unwrap(),
                RingFormat::Split,
                4,
                256
            )
            .unwrap_err(),
            RequestError::InflightSize {
                expected: 4224,
                actual: 4288
            }
        );
        let odd_offset = Inflight {
            mmap_offset: 4096,
            ..reply
        };
        assert!(matches!(
            InflightRegion::map(
                &odd_offset,
                fd.try_clone().unwrap(),
                RingFormat::Split,
                4,
                256
            ),
            Err(RequestError::Memory(_))
        ));
        for (d, err) in [
            (
                request(0, 128),
                RequestError::InflightQueues {
                    num_queues: 0,
                    max: 4,
                },
            ),
            (
                request(5, 128),
                RequestError::InflightQueues {
                    num_queues: 5,
                    max: 4,
                },
            ),
            (
                request(1, 0),
                RequestError::InflightQueueSize {
                    queue_size: 0,
                    max: 256,
                },
            ),
            (
                request(1, 512),
                RequestError::InflightQueueSize {
                    queue_size: 512,
                    max: 256,
                },
            ),
        ] {
            assert_eq!(
                InflightRegion::allocate(&d, RingFormat::Split, 4, 256).unwrap_err(),
                err
            );
        }
    }

    #[test]
    fn an_unsealed_fd_is_refused() {
        let (fd, _map) = MmapRegion::memfd("not-sealed", 2112).unwrap();
        let d = Inflight {
            mmap_size: 2112,
            ..request(1, 128)
        };
        assert_eq!(
            InflightRegion::map(&d, fd, RingFormat::Split, 1, 128).unwrap_err(),
            RequestError::InflightNotSealed
        );
    }

    #[test]
    fn packed_regions_are_sized_but_not_tracked() {
        let (_fd, region, reply) =
            InflightRegion::allocate(&request(1, 128), RingFormat::Packed, 1, 128).unwrap();
        assert_eq!(reply.mmap_size, 4160);
        assert_eq!(region.format(), RingFormat::Packed);
        assert!(region.queue(0, 128).is_none());
    }
}
