//! Backend selection: the fallback is forced by making the ring setup fail the way a sandbox
//! or an old kernel makes it fail.

use super::*;
use crate::storage::{FileDisk, FileOptions};
use vireo_memory::OwnedRegion;

#[test]
fn setup_refusals_fall_back_only_in_auto() {
    for errno in [libc::EPERM, libc::ENOSYS, libc::EACCES] {
        assert_eq!(choose::<()>(IoBackend::Auto, Err(errno)), Ok(None));
        assert_eq!(
            choose::<()>(IoBackend::RequireUring, Err(errno)),
            Err(StorageError::UringUnavailable { errno })
        );
    }
    // Running out of file descriptors is a real failure, not "no io_uring here".
    assert_eq!(
        choose::<()>(IoBackend::Auto, Err(libc::EMFILE)),
        Err(StorageError::Io {
            op: Operation::Ring,
            errno: libc::EMFILE
        })
    );
    assert_eq!(choose(IoBackend::Auto, Ok(7)), Ok(Some(7)));
}

fn image(len: usize) -> (tempfile::NamedTempFile, FileDisk) {
    let mut tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::io::Write::write_all(&mut tmp, &data).unwrap();
    let disk = FileDisk::open(tmp.path(), &FileOptions::default()).unwrap();
    (tmp, disk)
}

#[test]
fn forced_setup_failure_runs_the_synchronous_path() {
    let (_tmp, disk) = image(8192);
    let mem = OwnedRegion::new_area(4096).unwrap();
    let buf = mem.slice();
    for errno in [libc::EPERM, libc::ENOSYS] {
        buf.fill(0, 4096, 0).unwrap();
        let opts = QueueOptions {
            depth: 4,
            max_segments: 4,
            backend: IoBackend::Auto,
        };
        let got = IoQueue::scope_with(
            &disk,
            opts,
            |_, _, _| Err(errno),
            |q| {
                assert_eq!(q.backend(), ActiveBackend::Synchronous);
                q.submit(
                    9,
                    IoRequest::Read {
                        offset: 1000,
                        bufs: &[buf],
                    },
                )
                .unwrap();
                assert_eq!(q.in_flight(), 1);
                let mut seen = Vec::new();
                assert_eq!(q.reap(Wait::AtLeastOne, |c| seen.push(c)).unwrap(), 1);
                assert_eq!(q.in_flight(), 0);
                seen
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![Completion {
                token: 9,
                result: Ok(())
            }]
        );
        let mut b = [0u8; 3];
        buf.read(0, &mut b).unwrap();
        assert_eq!(
            b,
            [(1000 % 251) as u8, (1001 % 251) as u8, (1002 % 251) as u8]
        );
    }
    let opts = QueueOptions {
        backend: IoBackend::RequireUring,
        ..QueueOptions::default()
    };
    let r = IoQueue::scope_with(&disk, opts, |_, _, _| Err(libc::EPERM), |_| ());
    assert_eq!(
        r,
        Err(StorageError::UringUnavailable { errno: libc::EPERM })
    );
}
