//! No received fd outlives its message or session, whatever the front-end sends: the count of
//! open fds of this process is the same before and after a series of hostile sessions.
//! (Its own test binary: no other test opens fds meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::os::fd::AsFd;

use common::*;
use vireo_vhost_user::message::{
    Header, MemoryRegion, MemoryTable, Payload, Request, VringAddr, VringFd, VringState,
    FLAG_NEED_REPLY,
};

/// A front-end connected and served (a round trip proves the previous session has ended, as the
/// server serves one front-end at a time).
fn settled(server: &Server) -> Frontend {
    let fe = server.connect();
    assert_eq!(fe.get_u64(Request::GET_QUEUE_NUM), 2);
    fe
}

fn hostile_sessions(server: &Server) {
    let region = MemoryRegion {
        guest_addr: 0,
        size: 0x10000,
        user_addr: 0x1000_0000,
        mmap_offset: 0,
    };
    let table = MemoryTable {
        regions: vec![region],
    }
    .to_bytes();
    let kick = VringFd {
        index: 0,
        no_fd: false,
    }
    .to_u64()
    .to_bytes();

    // Fds on requests that take none, wrong fd counts, unmappable and short memory.
    {
        let fe = server.connect();
        fe.negotiate();
        let fds: Vec<_> = (0..8).map(|_| eventfd()).collect();
        assert_eq!(fe.ack(Request::SET_OWNER, &[], &borrowed(&fds)), 1);
        assert_eq!(fe.ack(Request::SET_VRING_KICK, &kick, &borrowed(&fds)), 1);
        assert_eq!(fe.ack(Request::SET_MEM_TABLE, &table, &borrowed(&fds)), 1);
        assert_eq!(fe.ack(Request::SET_MEM_TABLE, &table, &[fds[0].as_fd()]), 1);
        let (short, _) = memfd(0x1000);
        assert_eq!(fe.ack(Request::SET_MEM_TABLE, &table, &[short.as_fd()]), 1);
        // A malformed payload carrying fds.
        assert_eq!(
            fe.ack(Request::SET_MEM_TABLE, &[0; 5], &[fds[1].as_fd()]),
            1
        );
        fe.send_raw(77, &[], &borrowed(&fds), FLAG_NEED_REPLY);
        assert_eq!(u64::parse(&fe.recv().unwrap().unwrap().payload).unwrap(), 1);
    }
    // A running queue with kick, call and error fds and mapped memory, then a disconnect.
    {
        let fe = server.connect();
        fe.negotiate();
        let (mem, _) = memfd(0x10000);
        assert_eq!(fe.ack(Request::SET_MEM_TABLE, &table, &[mem.as_fd()]), 0);
        let s = VringState { index: 0, num: 8 }.to_bytes();
        assert_eq!(fe.ack(Request::SET_VRING_NUM, &s, &[]), 0);
        let a = VringAddr {
            index: 0,
            desc: 0x1000_0000,
            avail: 0x1000_1000,
            used: 0x1000_2000,
            ..Default::default()
        };
        assert_eq!(fe.ack(Request::SET_VRING_ADDR, &a.to_bytes(), &[]), 0);
        let (k, c, e) = (eventfd(), eventfd(), eventfd());
        let call = VringFd {
            index: 0,
            no_fd: false,
        }
        .to_u64()
        .to_bytes();
        assert_eq!(fe.ack(Request::SET_VRING_CALL, &call, &[c.as_fd()]), 0);
        assert_eq!(fe.ack(Request::SET_VRING_ERR, &call, &[e.as_fd()]), 0);
        assert_eq!(fe.ack(Request::SET_VRING_KICK, &kick, &[k.as_fd()]), 0);
        let en = VringState { index: 0, num: 1 }.to_bytes();
        assert_eq!(fe.ack(Request::SET_VRING_ENABLE, &en, &[]), 0);
        // Replacing the kick fd closes the old one.
        let k2 = eventfd();
        assert_eq!(fe.ack(Request::SET_VRING_KICK, &kick, &[k2.as_fd()]), 0);
    }
    // Too many fds in one message.
    {
        let fe = server.connect();
        let fds: Vec<_> = (0..8).map(|_| eventfd()).collect();
        let header = Header {
            request: Request::SET_VRING_KICK as u32,
            flags: 1,
            size: 8,
        };
        raw_send(&fe, &header.to_bytes(), &fds);
        raw_send(&fe, &kick, &fds);
        assert!(fe.is_closed());
    }
    // More fds in one sendmsg than the receiver has room for (the kernel truncates).
    {
        let fe = server.connect();
        let fds: Vec<_> = (0..12).map(|_| eventfd()).collect();
        let header = Header {
            request: Request::SET_VRING_KICK as u32,
            flags: 1,
            size: 8,
        };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&kick);
        raw_send(&fe, &bytes, &fds);
        assert!(fe.is_closed());
    }
    // Disconnect in the middle of a message that carried fds.
    {
        let fe = server.connect();
        let header = Header {
            request: Request::SET_MEM_TABLE as u32,
            flags: 1,
            size: 40,
        };
        let (mem, _) = memfd(0x10000);
        raw_send(&fe, &header.to_bytes(), &[mem]);
    }
}

fn raw_send(fe: &Frontend, bytes: &[u8], fds: &[std::os::fd::OwnedFd]) {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let borrowed = borrowed(fds);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
    let iov = [std::io::IoSlice::new(bytes)];
    assert_eq!(
        sendmsg(fe.conn.as_fd(), &iov, &mut control, SendFlags::empty()).unwrap(),
        bytes.len()
    );
}

#[test]
fn hostile_sessions_leak_no_fds() {
    let server = Server::start();
    let before = {
        let _fe = settled(&server);
        open_fds()
    };
    // Twice: a leak per session would show as a growing count, not a one-off.
    hostile_sessions(&server);
    hostile_sessions(&server);
    let after = {
        let _fe = settled(&server);
        open_fds()
    };
    assert_eq!(before, after, "open fds before and after hostile sessions");
}
