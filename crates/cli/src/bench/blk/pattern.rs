//! Data that names itself: every 512-byte sector written with `--verify` starts with a magic
//! number, its own byte offset on the disk and a generation, and the rest is derived from those
//! (the approach of fio's `verify_header` with a block offset check), so a read that returns
//! the wrong sector, a stale write, or torn data is caught and described.

use std::fmt;

/// "VIREOBLK".
const MAGIC: u64 = 0x4b4c_424f_4552_4956;
/// Bytes per self-describing unit.
pub const UNIT: usize = 512;
const WORDS: usize = UNIT / 8;

/// splitmix64: a cheap, well-mixed function of the position.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn word(offset: u64, generation: u32, i: usize) -> u64 {
    match i {
        0 => MAGIC,
        1 => offset,
        2 => u64::from(generation),
        _ => mix(offset ^ (u64::from(generation) << 40) ^ i as u64),
    }
}

/// Fills `buf` with the pattern of the disk bytes at `offset` on, generation `generation`
/// (`buf`'s length is a multiple of [`UNIT`]; a tail is left as it was).
pub fn fill(buf: &mut [u8], offset: u64, generation: u32) {
    for (u, unit) in buf.chunks_exact_mut(UNIT).enumerate() {
        let at = offset + (u * UNIT) as u64;
        for (i, w) in unit.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&word(at, generation, i).to_le_bytes());
        }
    }
}

/// What a read returned instead of the expected data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Disk offset of the first wrong unit.
    pub offset: u64,
    /// Generation expected there (`None`: zeroes expected).
    pub expected_generation: Option<u32>,
    /// What the unit's header says, when it has the magic number: its offset and generation.
    pub found: Option<(u64, u64)>,
    /// Byte of the unit where the first difference is.
    pub byte: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected_generation {
            Some(g) => write!(
                f,
                "data at disk offset {:#x} is not generation {g} of that offset",
                self.offset
            )?,
            None => write!(f, "data at disk offset {:#x} is not zeroes", self.offset)?,
        }
        write!(f, " (first wrong byte {}", self.byte)?;
        match self.found {
            Some((offset, generation)) => write!(
                f,
                "; the sector is generation {generation} of offset {offset:#x})"
            ),
            None => write!(f, "; the sector has no pattern header)"),
        }
    }
}

fn le(unit: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = unit.get(i * 8..i * 8 + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn describe(unit: &[u8], offset: u64, expected: Option<u32>, byte: usize) -> Mismatch {
    let found = (le(unit, 0) == MAGIC).then(|| (le(unit, 1), le(unit, 2)));
    Mismatch {
        offset,
        expected_generation: expected,
        found,
        byte,
    }
}

/// Checks that `buf` holds generation `generation` of the disk bytes at `offset` on.
pub fn check(buf: &[u8], offset: u64, generation: u32) -> Result<(), Mismatch> {
    for (u, unit) in buf.chunks_exact(UNIT).enumerate() {
        let at = offset + (u * UNIT) as u64;
        for i in 0..WORDS {
            if le(unit, i) != word(at, generation, i) {
                return Err(describe(unit, at, Some(generation), i * 8));
            }
        }
    }
    Ok(())
}

/// Checks that `buf` is all zeroes (a device that reads zeroes, such as QEMU's null-co with
/// `read-zeroes=on`).
pub fn check_zeroes(buf: &[u8], offset: u64) -> Result<(), Mismatch> {
    match buf.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(pos) => {
            let u = pos / UNIT;
            let unit = buf.get(u * UNIT..(u + 1) * UNIT).unwrap_or(&[]);
            Err(describe(unit, offset + (u * UNIT) as u64, None, pos % UNIT))
        }
    }
}

/// What one unit of a disk image holds, judged on its own (no knowledge of what was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitContent {
    /// No pattern header: never written by a verifying run (or overwritten by something else).
    Other,
    /// A complete pattern unit naming the offset it sits at.
    InPlace,
    /// A pattern unit that is elsewhere than it names, or torn.
    Wrong(Mismatch),
}

/// Judges the unit `unit` found at disk offset `at`: a unit with the pattern header must be
/// entirely the pattern of `at` and of the generation its header names.
pub fn classify(unit: &[u8], at: u64) -> UnitContent {
    if le(unit, 0) != MAGIC {
        return UnitContent::Other;
    }
    let generation = u32::try_from(le(unit, 2)).unwrap_or(u32::MAX);
    match check(unit, at, generation) {
        Ok(()) => UnitContent::InPlace,
        Err(m) => UnitContent::Wrong(m),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_buffer_checks_and_names_itself() {
        let mut b = vec![0u8; 4096];
        fill(&mut b, 0x10000, 3);
        assert_eq!(check(&b, 0x10000, 3), Ok(()));
        // Wrong generation, wrong offset, a flipped byte: all caught and described.
        let e = check(&b, 0x10000, 4).unwrap_err();
        assert_eq!((e.offset, e.found), (0x10000, Some((0x10000, 3))));
        let e = check(&b, 0x20000, 3).unwrap_err();
        assert_eq!(e.found, Some((0x10000, 3)));
        b[2 * 512 + 100] ^= 1;
        let e = check(&b, 0x10000, 3).unwrap_err();
        assert_eq!((e.offset, e.byte), (0x10000 + 1024, 96));
        assert!(
            e.to_string().contains("generation 3 of offset 0x10400"),
            "{e}"
        );
    }

    #[test]
    fn image_units_are_judged_on_their_own() {
        let mut b = vec![0u8; 1024];
        assert_eq!(classify(&b[..512], 0), UnitContent::Other);
        fill(&mut b, 4096, 9);
        assert_eq!(classify(&b[512..], 4096 + 512), UnitContent::InPlace);
        // The right data at the wrong place, and a torn unit.
        assert!(matches!(classify(&b[512..], 8192), UnitContent::Wrong(_)));
        b[300] ^= 0xff;
        assert!(matches!(classify(&b[..512], 4096), UnitContent::Wrong(_)));
    }

    #[test]
    fn zeroes_are_checked() {
        let mut b = vec![0u8; 1024];
        assert_eq!(check_zeroes(&b, 0), Ok(()));
        b[700] = 1;
        let e = check_zeroes(&b, 4096).unwrap_err();
        assert_eq!((e.offset, e.byte, e.found), (4096 + 512, 188, None));
        assert!(check(&b, 0, 1).is_err());
    }
}
