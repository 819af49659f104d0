//! Little-endian field access on byte slices that never panics.
//!
//! Views check their length once when they are made; these helpers still use `get`, so a
//! field outside the slice reads as zero and a write outside it is dropped instead of
//! panicking. With a checked view that case cannot arise.

/// Reads `N` bytes at `offset`, or zeroes if out of range.
#[inline]
fn read_array<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = offset.checked_add(N).and_then(|end| buf.get(offset..end)) {
        out.copy_from_slice(src);
    }
    out
}

/// Writes `bytes` at `offset`; does nothing if out of range.
#[inline]
fn write_array<const N: usize>(buf: &mut [u8], offset: usize, bytes: [u8; N]) {
    if let Some(dst) = offset
        .checked_add(N)
        .and_then(|end| buf.get_mut(offset..end))
    {
        dst.copy_from_slice(&bytes);
    }
}

/// Reads a byte.
#[inline]
pub(crate) fn get_u8(buf: &[u8], offset: usize) -> u8 {
    buf.get(offset).copied().unwrap_or(0)
}

/// Writes a byte.
#[inline]
pub(crate) fn set_u8(buf: &mut [u8], offset: usize, value: u8) {
    if let Some(b) = buf.get_mut(offset) {
        *b = value;
    }
}

/// Reads a `le16`.
#[inline]
pub(crate) fn get_le16(buf: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(read_array(buf, offset))
}

/// Writes a `le16`.
#[inline]
pub(crate) fn set_le16(buf: &mut [u8], offset: usize, value: u16) {
    write_array(buf, offset, value.to_le_bytes());
}

/// Reads a `le32`.
#[inline]
pub(crate) fn get_le32(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(read_array(buf, offset))
}

/// Writes a `le32`.
#[inline]
pub(crate) fn set_le32(buf: &mut [u8], offset: usize, value: u32) {
    write_array(buf, offset, value.to_le_bytes());
}

/// Reads a `le64`.
#[inline]
pub(crate) fn get_le64(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(read_array(buf, offset))
}

/// Writes a `le64`.
#[inline]
pub(crate) fn set_le64(buf: &mut [u8], offset: usize, value: u64) {
    write_array(buf, offset, value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_round_trip() {
        let mut buf = [0u8; 16];
        set_le64(&mut buf, 0, 0x0102_0304_0506_0708);
        set_le32(&mut buf, 8, 0x1122_3344);
        set_le16(&mut buf, 12, 0xaabb);
        set_u8(&mut buf, 14, 0x7f);
        let expected = [
            8, 7, 6, 5, 4, 3, 2, 1, 0x44, 0x33, 0x22, 0x11, 0xbb, 0xaa, 0x7f, 0,
        ];
        assert_eq!(buf, expected, "little-endian: low byte first");
        assert_eq!(get_le64(&buf, 0), 0x0102_0304_0506_0708);
        assert_eq!(get_le32(&buf, 8), 0x1122_3344);
        assert_eq!(get_le16(&buf, 12), 0xaabb);
        assert_eq!(get_u8(&buf, 14), 0x7f);
    }

    #[test]
    fn out_of_range_reads_zero_and_writes_nothing() {
        let mut buf = [0xffu8; 4];
        assert_eq!(get_le64(&buf, 0), 0);
        assert_eq!(get_le16(&buf, 3), 0);
        assert_eq!(get_le16(&buf, usize::MAX), 0);
        set_le32(&mut buf, 1, 0);
        set_le16(&mut buf, usize::MAX, 0);
        set_u8(&mut buf, 4, 0);
        assert_eq!(buf, [0xff; 4]);
    }
}
