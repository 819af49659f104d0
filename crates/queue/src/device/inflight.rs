//! The set of chain ids the device holds (popped, not yet used): one bit per id, allocated once
//! when the queue is made, so the hot path never allocates.

use alloc::vec;
use alloc::vec::Vec;

use super::DeviceQueueError;

/// A fixed-size bit set over ids `0..len`.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    words: Vec<u64>,
    len: u32,
}

impl InFlight {
    /// An empty set over `0..len`.
    pub(crate) fn new(len: u16) -> Self {
        let len = u32::from(len);
        InFlight {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    fn locate(&self, id: u16) -> Option<(usize, u64)> {
        (u32::from(id) < self.len).then_some((usize::from(id / 64), 1u64 << (id % 64)))
    }

    /// Adds `id`; false if it is out of range or already present.
    pub(crate) fn insert(&mut self, id: u16) -> bool {
        let Some((word, bit)) = self.locate(id) else {
            return false;
        };
        match self.words.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }

    /// Removes `id`; false if it is out of range or was not present.
    pub(crate) fn remove(&mut self, id: u16) -> bool {
        let Some((word, bit)) = self.locate(id) else {
            return false;
        };
        match self.words.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }

    /// Removes every id.
    pub(crate) fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// True if `id` is present.
    pub(crate) fn contains(&self, id: u16) -> bool {
        self.locate(id)
            .and_then(|(word, bit)| self.words.get(word).map(|w| w & bit != 0))
            .unwrap_or(false)
    }

    /// Checks a chain handle the device hands back (`add_used`): its id is below the queue size
    /// and the chain is held. Errors are the device's own misuse, not the driver's.
    pub(crate) fn check_handle(&self, id: u16, size: u16) -> Result<(), DeviceQueueError> {
        if id >= size {
            return Err(DeviceQueueError::ChainIdOutOfRange { head: id, size });
        }
        if !self.contains(id) {
            return Err(DeviceQueueError::ChainNotInFlight { head: id });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn insert_remove_and_bounds() {
        let mut s = InFlight::new(130);
        assert!(s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(129), "double insert is refused");
        assert!(!s.insert(130), "out of range is refused");
        assert!(s.contains(129) && s.contains(0) && !s.contains(64));
        assert!(s.remove(129));
        assert!(!s.remove(129), "double remove is refused");
        assert!(!s.remove(200));
        assert!(!s.contains(129));
        s.clear();
        assert!(!s.contains(0) && s.insert(0));
    }

    #[test]
    fn full_size_queue() {
        let mut s = InFlight::new(32768);
        assert!(s.insert(32767));
        assert!(s.contains(32767));
    }
}
