//! A position in a packed ring: a descriptor offset and the wrap counter of that lap (virtio
//! 1.2 §2.8.1).

use vireo_spec::packed::{desc, event, WrapCounter};

use super::{DeviceQueueError, DeviceQueueState};

/// An offset in the descriptor ring with the wrap counter of its lap. Positions cycle with a
/// period of two laps (`2 * size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingPos {
    /// Descriptor offset, below the queue size.
    pub(crate) off: u16,
    /// Wrap counter of the lap.
    pub(crate) wrap: WrapCounter,
}

impl RingPos {
    /// Where both sides start (§2.8.1: wrap counters start at 1).
    pub(crate) const START: RingPos = RingPos {
        off: 0,
        wrap: WrapCounter::INITIAL,
    };

    /// The position `n` descriptors on (`n` at most `size`), toggling the wrap counter when
    /// passing the end of the ring.
    #[must_use]
    pub(crate) fn advance(self, n: u16, size: u16) -> RingPos {
        let off = u32::from(self.off) + u32::from(n);
        if off >= u32::from(size) {
            RingPos {
                // Below size again: off < 2 * size.
                off: (off - u32::from(size)) as u16,
                wrap: self.wrap.toggled(),
            }
        } else {
            RingPos {
                off: off as u16,
                wrap: self.wrap,
            }
        }
    }

    /// Offset in bits 0..15, wrap counter in bit 15: the event suppression `desc` field
    /// (§2.8.14) and the vhost-user ring base encoding.
    pub(crate) fn encode(self) -> u16 {
        (self.off & event::OFF_MASK) | (self.wrap.bit() << 15)
    }

    /// Byte offset of the descriptor in the ring.
    pub(crate) fn byte_offset(self) -> usize {
        usize::from(self.off) * desc::SIZE
    }

    /// Position in the two-lap cycle, `0..2 * size`.
    fn linear(self, size: u16) -> u32 {
        let lap = if self.wrap.is_set() {
            0
        } else {
            u32::from(size)
        };
        u32::from(self.off) + lap
    }

    /// How many descriptors `self` is ahead of `from`, in `0..2 * size`.
    pub(crate) fn distance_from(self, from: RingPos, size: u16) -> u32 {
        let period = 2 * u32::from(size);
        (self.linear(size) + period - from.linear(size)) % period
    }

    /// The (available, used) positions of a saved state, checked against the ring size.
    pub(crate) fn from_state(
        state: &DeviceQueueState,
        size: u16,
    ) -> Result<(RingPos, RingPos), DeviceQueueError> {
        let check = |off: u16, wrap| {
            if off < size {
                Ok(RingPos { off, wrap })
            } else {
                Err(DeviceQueueError::StateOutOfRange { offset: off, size })
            }
        };
        Ok((
            check(state.next_avail, state.avail_wrap)?,
            check(state.next_used, state.used_wrap)?,
        ))
    }

    /// The state that resumes at these positions.
    pub(crate) fn to_state(avail: RingPos, used: RingPos) -> DeviceQueueState {
        DeviceQueueState {
            next_avail: avail.off,
            avail_wrap: avail.wrap,
            next_used: used.off,
            used_wrap: used.wrap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_wraps_and_toggles() {
        let p = RingPos::START.advance(2, 3);
        assert_eq!((p.off, p.wrap), (2, WrapCounter::INITIAL));
        let q = p.advance(3, 3);
        assert_eq!((q.off, q.wrap), (2, WrapCounter::ZERO));
        assert_eq!(q.distance_from(p, 3), 3);
        assert_eq!(p.distance_from(q, 3), 3);
        assert_eq!(
            q.advance(1, 3).distance_from(RingPos::START, 3),
            0,
            "two laps"
        );
        assert_eq!(q.encode(), 2);
        assert_eq!(p.encode(), 0x8002);
    }
}
