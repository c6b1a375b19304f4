//! A TCP proxy that can turn into a black hole: it forwards to a backend until told otherwise,
//! then keeps every connection open and holds every byte, in both directions (new connections
//! are accepted and held too). That is what a network partition or a paused peer looks like to
//! a client, and only an operation timeout gets a caller out of it. Healed, the held bytes flow
//! on, as TCP's retransmissions would deliver them; bytes held when their sender closes are
//! lost. Threads rather than a runtime, so it works from any test, async or not.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct BlackHoleProxy {
    pub port: u16,
    holed: Arc<AtomicBool>,
    /// A request pattern whose connection, once it carries it, gets no more replies.
    lose_reply: Arc<Mutex<Option<Vec<u8>>>>,
    counted: Arc<Mutex<Counted>>,
}

/// Requests seen carrying a pattern.
#[derive(Default)]
struct Counted {
    pattern: Vec<u8>,
    seen: usize,
}

/// What every connection of one proxy shares.
#[derive(Clone)]
struct Shared {
    holed: Arc<AtomicBool>,
    lose_reply: Arc<Mutex<Option<Vec<u8>>>>,
    counted: Arc<Mutex<Counted>>,
}

impl BlackHoleProxy {
    /// A proxy to `target` (forwarding until `black_hole`), listening on a free loopback port.
    pub fn forward_to(target: SocketAddr) -> BlackHoleProxy {
        Self::listen(Some(target))
    }

    /// A listener that accepts connections and never answers, from the start.
    pub fn nowhere() -> BlackHoleProxy {
        Self::listen(None)
    }

    fn listen(target: Option<SocketAddr>) -> BlackHoleProxy {
        let listener = TcpListener::bind(("127.0.0.1", super::free_port())).expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Shared {
            holed: Arc::new(AtomicBool::new(target.is_none())),
            lose_reply: Arc::new(Mutex::new(None)),
            counted: Arc::default(),
        };
        let proxy = BlackHoleProxy {
            port,
            holed: shared.holed.clone(),
            lose_reply: shared.lose_reply.clone(),
            counted: shared.counted.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, target, shared));
            }
        });
        proxy
    }

    /// Once: the next request containing `pattern` reaches the backend, but its reply (and
    /// anything after it on that connection) is lost, as when a network drops between the
    /// server applying a write and the client hearing of it.
    pub fn lose_the_reply_to(&self, pattern: &[u8]) {
        *self.lose_reply.lock().unwrap() = Some(pattern.to_vec());
    }

    /// From now on, counts the request chunks that carry `pattern` (e.g. an API action name).
    pub fn count(&self, pattern: &[u8]) {
        *self.counted.lock().unwrap() = Counted {
            pattern: pattern.to_vec(),
            seen: 0,
        };
    }

    /// How many request chunks carried the pattern given to `count` (held ones too).
    pub fn counted(&self) -> usize {
        self.counted.lock().unwrap().seen
    }

    /// From now on, nothing goes through: bytes are read and held, nothing is closed.
    pub fn black_hole(&self) {
        self.holed.store(true, Ordering::SeqCst);
    }

    /// Forward again, what was held first.
    pub fn heal(&self) {
        self.holed.store(false, Ordering::SeqCst);
    }
}

fn serve(client: TcpStream, target: Option<SocketAddr>, shared: Shared) {
    let upstream = target.and_then(|t| TcpStream::connect(t).ok());
    let Some(upstream) = upstream else {
        // Never answered: read until the client gives up.
        swallow(client);
        return;
    };
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let muted = Arc::new(AtomicBool::new(false));
    let requests = Direction {
        shared: shared.clone(),
        muted: muted.clone(),
        requests: true,
    };
    std::thread::spawn(move || pump(c2, u2, requests));
    let replies = Direction {
        shared,
        muted,
        requests: false,
    };
    pump(upstream, client, replies);
}

/// One direction of one connection.
struct Direction {
    shared: Shared,
    /// Set when this connection carried the pattern whose reply is lost.
    muted: Arc<AtomicBool>,
    requests: bool,
}

impl Direction {
    fn holed(&self) -> bool {
        self.shared.holed.load(Ordering::SeqCst)
    }

    /// Counts a request chunk carrying the counted pattern, whether or not it goes through (a
    /// request held in the hole is seen too).
    fn count(&self, chunk: &[u8]) {
        if self.requests {
            let mut counted = self.shared.counted.lock().unwrap();
            if contains(chunk, &counted.pattern) {
                counted.seen += 1;
            }
        }
    }

    /// Whether `chunk` goes through now (else it is held, or, for a lost reply, dropped).
    fn passes(&self, chunk: &[u8]) -> bool {
        if self.requests {
            let mut armed = self.shared.lose_reply.lock().unwrap();
            if armed.as_ref().is_some_and(|p| contains(chunk, p)) {
                *armed = None;
                self.muted.store(true, Ordering::SeqCst);
            }
            return true;
        }
        !self.muted.load(Ordering::SeqCst)
    }
}

fn contains(chunk: &[u8], pattern: &[u8]) -> bool {
    !pattern.is_empty() && chunk.windows(pattern.len()).any(|w| w == pattern)
}

fn swallow(mut stream: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Copies `from` to `to`; holds what it reads while the proxy is a hole.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: Direction) {
    // Reads wake up now and then, so held bytes leave as soon as the proxy heals.
    let _ = from.set_read_timeout(Some(std::time::Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if !held.is_empty() && !direction.holed() {
            if to.write_all(&held).is_err() {
                break;
            }
            held.clear();
        }
        let read = from.read(&mut buf);
        if let Ok(n) = read {
            direction.count(&buf[..n]);
        }
        match read {
            Ok(0) => break,
            // Sent at the top of the loop, unless the proxy is (or turns into) a hole.
            Ok(n) if direction.holed() || direction.passes(&buf[..n]) => {
                held.extend_from_slice(&buf[..n])
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
