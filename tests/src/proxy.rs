//! Client-side network faults without root: a loopback TCP proxy in front of
//! a node that can be switched to black-hole mode, and a listener that
//! accepts connections and never answers (a paused node, a black-holed
//! route).
//!
//! In black-hole mode the proxy keeps accepting connections and holds every
//! socket open (new and already forwarding ones alike), forwards nothing,
//! answers nothing and never closes: from the client's side every packet is
//! swallowed, so only its own timeouts can end a request.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often idle threads look at the mode and shutdown flags.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Flags {
    black_hole: AtomicBool,
    /// Forward requests, swallow answers: the request takes effect and the
    /// client never learns it (a reply lost on the way back).
    deaf: AtomicBool,
    /// When non-zero: each connection's answers are forwarded up to this
    /// many bytes, then the connection is closed both ways (a stream cut
    /// mid-way: a proxy, a load balancer or the network giving up).
    cut_answers_after: AtomicU64,
    shutdown: AtomicBool,
}

/// A TCP proxy on a free loopback port; stops (closing everything) on drop.
#[derive(Debug)]
pub struct Proxy {
    addr: String,
    flags: Arc<Flags>,
}

impl Proxy {
    /// Forwards connections to `target` (`host:port`) until switched to
    /// black-hole mode.
    pub fn start(target: &str) -> Proxy {
        Proxy::spawn(Some(target.to_string()))
    }

    /// A listener that accepts connections and never answers: a proxy that
    /// is in black-hole mode from the start and has no target.
    pub fn hung() -> Proxy {
        let p = Proxy::spawn(None);
        p.black_hole();
        p
    }

    fn spawn(target: Option<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let flags = Arc::new(Flags::default());
        let f = flags.clone();
        thread::spawn(move || accept_loop(listener, target, f));
        Proxy { addr, flags }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://host:port` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, swallow everything (existing connections included).
    pub fn black_hole(&self) {
        self.flags.black_hole.store(true, Ordering::SeqCst);
    }

    /// From now on, forward what clients send but swallow every answer
    /// (connections stay open): requests take effect, replies are lost.
    pub fn deaf(&self) {
        self.flags.deaf.store(true, Ordering::SeqCst);
    }

    /// From now on, close each connection once `bytes` of its answers
    /// have been forwarded (new connections count from zero).
    pub fn cut_answers_after(&self, bytes: u64) {
        self.flags.cut_answers_after.store(bytes, Ordering::SeqCst);
    }

    /// Forward again (connections held while black-holed stay dead).
    pub fn heal(&self) {
        self.flags.black_hole.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flags.shutdown.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, target: Option<String>, flags: Arc<Flags>) {
    while !flags.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((sock, _)) => {
                let (t, f) = (target.clone(), flags.clone());
                thread::spawn(move || serve(sock, t, f));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// One accepted connection: held silently while black-holed, else piped to
/// the target in both directions.
fn serve(client: TcpStream, target: Option<String>, flags: Arc<Flags>) {
    let _ = client.set_nonblocking(false);
    let upstream = match (&target, flags.black_hole.load(Ordering::SeqCst)) {
        (Some(t), false) => TcpStream::connect(t).ok(),
        _ => None,
    };
    let Some(upstream) = upstream else {
        hold(&flags);
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let f2 = flags.clone();
    let back = thread::spawn(move || pump(u2, c2, f2, true));
    pump(client, upstream, flags, false);
    let _ = back.join();
}

/// Keeps a connection open (by not returning) until the proxy is dropped.
fn hold(flags: &Flags) {
    while !flags.shutdown.load(Ordering::SeqCst) {
        thread::sleep(POLL);
    }
}

/// Copies `from` to `to` while forwarding; in black-hole mode reads are
/// discarded and nothing is written or closed; so are answers (`answers`:
/// the node-to-client direction) in deaf mode.
fn pump(mut from: TcpStream, mut to: TcpStream, flags: Arc<Flags>, answers: bool) {
    let swallow = |f: &Flags| {
        f.black_hole.load(Ordering::SeqCst) || (answers && f.deaf.load(Ordering::SeqCst))
    };
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    let mut forwarded = 0u64;
    loop {
        if flags.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                if swallow(&flags) {
                    hold(&flags);
                }
                break;
            }
            Ok(n) => {
                if swallow(&flags) {
                    continue;
                }
                let cut = flags.cut_answers_after.load(Ordering::SeqCst);
                let room = if answers && cut > 0 {
                    usize::try_from(cut.saturating_sub(forwarded)).unwrap_or(n)
                } else {
                    n
                };
                let m = n.min(room);
                if to.write_all(&buf[..m]).is_err() {
                    break;
                }
                forwarded += m as u64;
                if m < n {
                    // Cut: both sides see the connection end mid-answer.
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                if swallow(&flags) {
                    hold(&flags);
                }
                break;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
