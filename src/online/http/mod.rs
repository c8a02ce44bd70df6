//! A small HTTP/1.1 server for [`Service`] on std's `TcpListener`: one thread
//! per connection, keep-alive, `Content-Length` or chunked request bodies,
//! `Expect: 100-continue`. Request heads and chunk-size lines are parsed by
//! `httparse` (hyper's parser); this file frames them under deadlines and
//! limits and routes.
//!
//! Routes: `POST /observe` (a request as on the JSON-lines surface),
//! `GET /weights`, `GET /healthz`. Malformed HTTP gets a 4xx with
//! `{"error": …}` and the connection is closed; a malformed observe body gets
//! `400` with `{"error": …}` and the state is untouched.
//!
//! Hostile or broken clients cannot lock it out:
//! - a request's head and body must arrive within `--request-timeout-s` of
//!   their first byte (a deadline, not a per-read timeout, so a client
//!   trickling one byte at a time is cut off too, with `408`); an idle
//!   keep-alive connection is closed after [`IDLE_TIMEOUT`];
//! - at [`MAX_CONNECTIONS`], a new connection evicts the connection that has
//!   been waiting longest for a request to arrive (idle, or still sending one)
//!   instead of being refused: capacity goes to clients that send requests.
//!   Only when every connection has a request in progress is the newcomer
//!   answered `503`;
//! - a request refused before it was read whole (head too large, body too
//!   large, bad framing) gets its response, then the rest of what the client
//!   sends is read and dropped for a moment before closing, so the client sees
//!   the status instead of a TCP reset.
//!
//! Why not a whole server crate (issue 13 asked for one where it costs
//! nothing): tiny_http has no head or body deadline and no connection cap, so
//! a slow-client flood holds a thread per connection; hyper needs tokio, closes
//! a connection whose head is late without a `408` and answers framing
//! errors itself, without the `{"error": …}` body saying what was wrong, and
//! the connection cap and eviction would still be ours. Each is a behaviour
//! `tests/hostile_http.rs` and `bench/chaos.sh` check. What was hand-written and fragile — parsing the
//! protocol — is `httparse`'s now.

mod read;

use super::service::{error_json, Prepared, Service};
use crate::error::{Error, Result};
use read::{read_body, read_head, refuse, BodyFraming, DeadlineReader, Head, Refusal};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (a 10,000-domain request fits).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Connections held at once; past it the longest-waiting one is evicted.
pub const MAX_CONNECTIONS: usize = 256;
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for a request's head, and again for its body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A response that cannot be written in this long is abandoned.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a request mid-stream: read and drop the client's remaining
/// bytes for at most this long / this many bytes, then close.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 << 20;

/// Server options.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Deadline for a request's head (from its first byte) and for its body.
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serve until the process is stopped. `on_ready` gets the bound address
/// (useful with port 0).
pub fn serve(
    service: Service,
    addr: &str,
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::invalid(format!("--listen {addr}: cannot bind: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::invalid(format!("--listen {addr}: {e}")))?;
    on_ready(local);
    let service = Arc::new(Shared {
        inner: Mutex::new(Inner {
            persisted: service.staged_seq(),
            service,
            writing: false,
            failures: Vec::new(),
        }),
        written: Condvar::new(),
    });
    let conns = Arc::new(Registry::default());
    let next_id = AtomicU64::new(0);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if !conns.admit(id, &stream, opts.max_connections) {
            let msg = error_json("too many connections with requests in progress");
            let _ = write_response(&mut stream, 503, &msg, false);
            continue;
        }
        let service = Arc::clone(&service);
        let registry = Arc::clone(&conns);
        let spawned = std::thread::Builder::new()
            .name("online-http".into())
            .spawn(move || {
                let _ = handle_connection(stream, id, &service, &registry, opts);
                registry.leave(id);
            });
        if spawned.is_err() {
            conns.leave(id);
        }
    }
    Ok(())
}

/// The open connections, for the cap and eviction.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Conn>>,
}

struct Conn {
    /// A handle to shut the connection down from the accept thread.
    stream: TcpStream,
    /// A request is read whole and being answered: never evicted.
    busy: bool,
    /// Since when it has been waiting for (the rest of) a request.
    waiting_since: Instant,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a new connection, evicting the longest-waiting one at the
    /// cap; false when every connection is busy.
    fn admit(&self, id: u64, stream: &TcpStream, max: usize) -> bool {
        let Ok(handle) = stream.try_clone() else {
            return false;
        };
        let mut g = self.lock();
        if g.len() >= max {
            let victim = g
                .iter()
                .filter(|(_, c)| !c.busy)
                .min_by_key(|(k, c)| (c.waiting_since, **k))
                .map(|(k, _)| *k);
            let Some(victim) = victim else {
                return false;
            };
            if let Some(c) = g.remove(&victim) {
                // Its thread sees EOF or an error and exits.
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        g.insert(
            id,
            Conn {
                stream: handle,
                busy: false,
                waiting_since: Instant::now(),
            },
        );
        true
    }

    /// Mark a connection busy (request read) or waiting again (answered).
    /// False when it was evicted meanwhile.
    fn set_busy(&self, id: u64, busy: bool) -> bool {
        match self.lock().get_mut(&id) {
            Some(c) => {
                c.busy = busy;
                if !busy {
                    c.waiting_since = Instant::now();
                }
                true
            }
            None => false,
        }
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// The service plus group-commit bookkeeping. A request's update is staged
/// under the lock (the next request builds on it); whoever finds no write in
/// progress takes every staged update, writes the state (outside the lock)
/// and only then installs it as the committed state. A response is sent only
/// once the state holding its update is on disk, so "persisted after every
/// update" holds while one write serves many requests, and memory never runs
/// ahead of the file: a failed write discards every staged update and each
/// of their requests is answered 500.
struct Shared {
    inner: Mutex<Inner>,
    written: Condvar,
}

struct Inner {
    service: Service,
    /// Staging sequence numbers known to be on disk (the newest committed).
    persisted: u64,
    writing: bool,
    /// One entry per failed write, in order: `persisted` at the time (staged
    /// updates after it were discarded) and the error.
    failures: Vec<(u64, String)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one observe request and wait until it is persisted.
    fn observe(&self, body: &[u8]) -> (u16, String) {
        let mut g = self.lock();
        let (response, me) = match g.service.prepare(body) {
            Ok(Prepared::Update(pending)) => {
                let (seq, response) = g.service.stage(pending);
                (Some(response), seq)
            }
            // A retry: answered once everything staged so far is on disk
            // (the original may be staged or in the write in progress).
            Ok(Prepared::Replay) => (None, g.service.staged_seq()),
            Err(e) => return (400, error_json(&e.to_string())),
        };
        // Failures recorded before this request are not its own.
        let epoch = g.failures.len();
        loop {
            if let Some((upto, msg)) = g.failures.get(epoch) {
                if *upto < me {
                    let msg = format!("the state could not be written, update not applied: {msg}");
                    return (500, error_json(&msg));
                }
            }
            if g.persisted >= me {
                let response = response.unwrap_or_else(|| g.service.replay_response());
                return (200, response);
            }
            if g.writing {
                g = self.written.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let batch = match g.service.take_batch() {
                Ok(Some(b)) => b,
                // Nothing staged beyond what is persisted (cannot happen
                // while `persisted < me`; answer rather than spin).
                Ok(None) => {
                    g.persisted = g.service.staged_seq();
                    continue;
                }
                Err(e) => {
                    let persisted = g.persisted;
                    g.service.discard_staged();
                    g.failures.push((persisted, e.to_string()));
                    continue;
                }
            };
            g.writing = true;
            drop(g);
            let result = batch.write();
            g = self.lock();
            g.writing = false;
            match result {
                Ok(()) => {
                    g.persisted = batch.seq;
                    g.service.install(batch);
                }
                Err(e) => {
                    let persisted = g.persisted;
                    g.service.discard_staged();
                    g.failures.push((persisted, e.to_string()));
                }
            }
            self.written.notify_all();
        }
    }
}

fn handle_connection(
    stream: TcpStream,
    id: u64,
    service: &Shared,
    registry: &Registry,
    opts: ServeOptions,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(DeadlineReader {
        stream,
        deadline: Instant::now(),
    });
    let mut body = Vec::new();
    loop {
        let head = match read_head(&mut reader, opts.request_timeout) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(r) => return refuse_and_close(&mut writer, &mut reader, r),
        };
        let needs_body = matches!(head.method.as_str(), "POST" | "PUT" | "PATCH");
        if needs_body && head.body == BodyFraming::None {
            let r = refuse(
                411,
                format!(
                    "{} needs a Content-Length header (or a chunked body)",
                    head.method
                ),
            );
            return refuse_and_close(&mut writer, &mut reader, r);
        }
        if let BodyFraming::Length(len) = head.body {
            if len > MAX_BODY_BYTES {
                let r = refuse(413, format!("body of {len} bytes exceeds {MAX_BODY_BYTES}"));
                return refuse_and_close(&mut writer, &mut reader, r);
            }
        }
        if head.expect_continue && head.body != BodyFraming::None {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let read = read_body(&mut reader, &head, &mut body, opts.request_timeout);
        if let Err(r) = read {
            return refuse_and_close(&mut writer, &mut reader, r);
        }
        if !registry.set_busy(id, true) {
            return Ok(()); // evicted while its request was arriving
        }
        let (status, text) = route(&head, &body, service);
        write_response(&mut writer, status, &text, head.keep_alive)?;
        if !head.keep_alive || !registry.set_busy(id, false) {
            return Ok(());
        }
    }
}

/// Answer a request that could not be read whole, then read and drop what
/// the client still sends (briefly) so it gets the answer, not a reset.
fn refuse_and_close(
    writer: &mut TcpStream,
    reader: &mut BufReader<DeadlineReader>,
    r: Refusal,
) -> std::io::Result<()> {
    if r.status == 0 {
        return Ok(()); // the connection itself failed: nobody to answer
    }
    write_response(writer, r.status, &error_json(&r.msg), false)?;
    let _ = writer.shutdown(Shutdown::Write);
    reader.get_mut().deadline = Instant::now() + LINGER;
    let _ = std::io::copy(
        &mut reader.by_ref().take(LINGER_BYTES),
        &mut std::io::sink(),
    );
    Ok(())
}

fn route(head: &Head, body: &[u8], service: &Shared) -> (u16, String) {
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/observe") => service.observe(body),
        ("GET", "/weights") => (200, service.lock().service.current()),
        ("GET", "/healthz") => (200, "{\"ok\":true}".to_string()),
        (_, "/observe") | (_, "/weights") | (_, "/healthz") => (
            405,
            error_json(&format!(
                "method {} not allowed on {}",
                head.method, head.path
            )),
        ),
        _ => (
            404,
            error_json(&format!(
                "no route {} {} (POST /observe, GET /weights, GET /healthz)",
                head.method, head.path
            )),
        ),
    }
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let mut out = Vec::with_capacity(128 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len() + 1
    );
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    w.write_all(&out)
}
