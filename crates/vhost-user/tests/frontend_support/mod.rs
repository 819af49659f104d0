//! A fake back-end for the front-end tests: a thread serving one end of a socket pair, with a
//! sensible default answer to every request and a policy that may misbehave on purpose.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use vireo_vhost_user::connection::{Connection, Message};
use vireo_vhost_user::frontend::{Frontend, FrontendOptions};
use vireo_vhost_user::message::{
    ConfigSpace, Header, Payload, ProtocolFeatures, Request, VringState, FLAG_REPLY,
    VHOST_USER_F_PROTOCOL_FEATURES,
};

/// virtio 1.2 §6: VIRTIO_F_VERSION_1.
pub const VERSION_1: u64 = 1 << 32;
/// What the fake offers by default.
pub const FEATURES: u64 = VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
/// The protocol features the fake offers by default.
pub const PROTOCOL: ProtocolFeatures = ProtocolFeatures::MQ
    .union(ProtocolFeatures::REPLY_ACK)
    .union(ProtocolFeatures::CONFIG)
    .union(ProtocolFeatures::CONFIGURE_MEM_SLOTS);

/// What the fake does with one request.
pub enum Action {
    /// The well-behaved answer.
    Default,
    /// A correct reply header with this payload.
    Reply(Vec<u8>),
    /// Any header and payload, with fds.
    Raw {
        code: u32,
        flags: u32,
        payload: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    /// A reply header announcing `size` bytes, then only `sent` of them, then close.
    Short { size: u32, sent: usize },
    /// No answer at all (the fake keeps the socket open and reads on).
    Silence,
    /// The well-behaved answer, one byte every `gap` (stops when the peer closes).
    Trickle { gap: Duration },
    /// Close the connection.
    Close,
}

/// The well-behaved answer to `m`, if it has one.
pub fn default_reply(m: &Message) -> Option<Vec<u8>> {
    let req = Request::from_code(m.header.request)?;
    let body = match req {
        Request::GET_FEATURES => FEATURES.to_bytes(),
        Request::GET_PROTOCOL_FEATURES => PROTOCOL.bits().to_bytes(),
        Request::GET_QUEUE_NUM => 2u64.to_bytes(),
        Request::GET_MAX_MEM_SLOTS => 8u64.to_bytes(),
        Request::GET_STATUS => 0u64.to_bytes(),
        Request::GET_CONFIG => {
            let mut c = ConfigSpace::parse(&m.payload).unwrap();
            c.payload.iter_mut().for_each(|b| *b = 0x5a);
            c.to_bytes()
        }
        Request::GET_VRING_BASE => {
            let s = VringState::parse(&m.payload).unwrap();
            VringState {
                index: s.index,
                num: 0,
            }
            .to_bytes()
        }
        _ if m.header.needs_reply() => 0u64.to_bytes(),
        _ => return None,
    };
    Some(body)
}

/// A running fake; [`Fake::join`] returns the code of every request it saw.
pub struct Fake {
    requests: mpsc::Receiver<u32>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Joins the thread (drop the front-end first, unless the fake closed by itself).
    pub fn join(mut self) -> Vec<u32> {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.requests.try_iter().collect()
    }
}

/// Serves `theirs` with `policy` until the peer closes or the policy ends the session.
fn serve(theirs: UnixStream, tx: mpsc::Sender<u32>, mut policy: impl FnMut(&Message) -> Action) {
    let raw = theirs.try_clone().unwrap();
    let conn = Connection::new(theirs);
    while let Ok(Some(m)) = conn.recv() {
        let _ = tx.send(m.header.request);
        let reply = |payload: &[u8]| {
            let h = m.header.reply(payload.len() as u32);
            conn.send(&h, payload, &[]).is_ok()
        };
        let go_on = match policy(&m) {
            Action::Default => default_reply(&m).is_none_or(|b| reply(&b)),
            Action::Reply(b) => reply(&b),
            Action::Raw {
                code,
                flags,
                payload,
                fds,
            } => {
                let h = Header {
                    request: code,
                    flags,
                    size: payload.len() as u32,
                };
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                conn.send(&h, &payload, &borrowed).is_ok()
            }
            Action::Short { size, sent } => {
                let mut bytes = m.header.reply(size).to_bytes().to_vec();
                bytes.extend(std::iter::repeat_n(0u8, sent));
                let _ = (&raw).write_all(&bytes);
                false
            }
            Action::Silence => true,
            Action::Trickle { gap } => {
                let body = default_reply(&m).unwrap_or_default();
                let mut bytes = m.header.reply(body.len() as u32).to_bytes().to_vec();
                bytes.extend(body);
                bytes.iter().all(|b| {
                    std::thread::sleep(gap);
                    (&raw).write_all(std::slice::from_ref(b)).is_ok()
                })
            }
            Action::Close => false,
        };
        if !go_on {
            break;
        }
    }
}

/// A front-end (reply timeout `timeout`) connected to a fake driven by `policy`.
pub fn start(
    timeout: Duration,
    policy: impl FnMut(&Message) -> Action + Send + 'static,
) -> (Frontend, Fake) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || serve(theirs, tx, policy));
    let options = FrontendOptions {
        reply_timeout: timeout,
    };
    let fe = Frontend::from_stream(ours, options).unwrap();
    let fake = Fake {
        requests: rx,
        thread: Some(thread),
    };
    (fe, fake)
}

/// Flags of a proper reply header (version 1, REPLY).
pub const REPLY: u32 = 1 | FLAG_REPLY;

/// `true` when `m` is request `req`.
pub fn is(m: &Message, req: Request) -> bool {
    m.header.request == req as u32
}

pub fn eventfd() -> OwnedFd {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
