//! Backend selection: the fallback is forced by making the ring setup fail.

use super::*;
use crate::storage::RamDisk;

#[test]
fn placeholder_choose() {
    assert_eq!(choose::<()>(IoBackend::Auto, Err(libc::EPERM)), Ok(None));
}
