//! A small HTTP/1.1 server for [`Service`] on std's `TcpListener`: one thread
//! per connection, keep-alive, `Content-Length` bodies only.
//!
//! Routes: `POST /observe` (a request as on the JSON-lines surface),
//! `GET /weights`, `GET /healthz`. Malformed HTTP gets a 4xx and the
//! connection is closed; a malformed observe body gets `400` with
//! `{"error": …}` and the state is untouched.
//!
//! Hostile or broken clients cannot lock it out:
//! - a request's head and body must arrive within `--request-timeout-s` of
//!   their first byte (a deadline, not a per-read timeout, so a client
//!   trickling one byte at a time is cut off too); an idle keep-alive
//!   connection is closed after [`IDLE_TIMEOUT`];
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
//! Why not a server crate: the one trainers need is this small protocol
//! subset, and the protections above are not defaults of the blocking servers
//! (tiny_http has no header or body deadline and no eviction); hyper would
//! bring tokio and still need our own connection cap and eviction. Measured
//! with `bench/chaos.sh` (docs/benchmarks.md).

use super::service::{error_json, Prepared, Service};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
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
            service,
            applied: 0,
            persisted: 0,
            writing: false,
            failed: None,
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

/// Reads from the socket with an absolute deadline (std sockets only have
/// per-call timeouts: the remaining time is set before each read).
struct DeadlineReader {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        match self.stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Err(std::io::ErrorKind::TimedOut.into())
            }
            other => other,
        }
    }
}

/// Why a request could not be read: the status to answer (if any) and why.
struct Refusal {
    status: u16,
    msg: String,
}

fn refuse(status: u16, msg: impl Into<String>) -> Refusal {
    Refusal {
        status,
        msg: msg.into(),
    }
}

struct Head {
    method: String,
    path: String,
    content_length: Option<usize>,
    keep_alive: bool,
    chunked: bool,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Read one request head; `Ok(None)` on a clean EOF (or idle timeout)
/// between requests. The head must be complete `timeout` after its first byte.
fn read_head(
    reader: &mut BufReader<DeadlineReader>,
    timeout: Duration,
) -> std::result::Result<Option<Head>, Refusal> {
    // Wait for the first byte of the next request under the idle timeout.
    reader.get_mut().deadline = Instant::now() + IDLE_TIMEOUT;
    match reader.fill_buf() {
        Ok([]) => return Ok(None),
        Ok(_) => {}
        Err(e) if is_timeout(&e) => return Ok(None),
        Err(e) => return Err(refuse(0, format!("read: {e}"))),
    }
    reader.get_mut().deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut total = 0usize;
    let mut lines: Vec<String> = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| {
                if is_timeout(&e) {
                    refuse(408, format!("request head not complete within {timeout:?}"))
                } else {
                    refuse(0, format!("read: {e}"))
                }
            })?;
        if n == 0 {
            return Err(refuse(0, "connection closed inside the request head"));
        }
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(refuse(
                431,
                format!("request head larger than {MAX_HEAD_BYTES} bytes"),
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| refuse(400, "request head is not UTF-8"))?
            .trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(text.to_string());
    }
    parse_head(&lines).map(Some)
}

fn parse_head(lines: &[String]) -> std::result::Result<Head, Refusal> {
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(
            400,
            format!("malformed request line {:?}", lines[0]),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(refuse(400, format!("unsupported protocol {version:?}")));
    }
    let mut head = Head {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        content_length: None,
        keep_alive: version == "HTTP/1.1",
        chunked: false,
    };
    for h in &lines[1..] {
        let Some((name, value)) = h.split_once(':') else {
            return Err(refuse(400, format!("malformed header {h:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n: usize = value.parse().map_err(|_| {
                    refuse(400, format!("Content-Length {value:?} is not a number"))
                })?;
                // Repeats must agree (RFC 9110 §8.6); differing ones are an
                // attack on framing, not a choice to make for the client.
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(refuse(400, "two different Content-Length headers"));
                }
                head.content_length = Some(n);
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    head.keep_alive = false;
                } else if v.contains("keep-alive") {
                    head.keep_alive = true;
                }
            }
            "transfer-encoding" => head.chunked = true,
            _ => {}
        }
    }
    Ok(head)
}

/// The service plus group-commit bookkeeping. Updates are applied in memory
/// under the lock; whoever finds no write in progress writes the newest state
/// (outside the lock) and thereby commits every update applied so far. A
/// response is sent only once the state containing its update is on disk, so
/// "persisted after every update" holds while one write serves many requests.
struct Shared {
    inner: Mutex<Inner>,
    written: Condvar,
}

struct Inner {
    service: Service,
    /// Updates applied in memory / known to be on disk (counted since start).
    applied: u64,
    persisted: u64,
    writing: bool,
    /// The newest failed write: updates up to this count got an error response.
    failed: Option<(u64, String)>,
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
                let response = g.service.commit(pending);
                g.applied += 1;
                (response, g.applied)
            }
            // A retry: answered once everything applied so far is on disk
            // (the original may still be in the write in progress).
            Ok(Prepared::Replay) => (g.service.replay_response(), g.applied),
            Err(e) => return (400, error_json(&e.to_string())),
        };
        loop {
            if g.persisted >= me {
                return (200, response);
            }
            if let Some((upto, msg)) = &g.failed {
                if *upto >= me {
                    let msg = format!(
                        "update applied in memory but the state could not be written: {msg}"
                    );
                    return (500, error_json(&msg));
                }
            }
            if g.writing {
                g = self.written.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let target = g.applied;
            let snapshot = g.service.snapshot();
            g.writing = true;
            drop(g);
            let result = match snapshot {
                Ok(Some((path, bytes))) => crate::mixture::write_atomic(&path, &bytes),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            g = self.lock();
            g.writing = false;
            match result {
                Ok(()) => g.persisted = g.persisted.max(target),
                Err(e) => g.failed = Some((target, e.to_string())),
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
        let len = match (head.chunked, head.content_length) {
            (true, _) => {
                let r = refuse(
                    411,
                    "chunked request bodies are not supported: send Content-Length",
                );
                return refuse_and_close(&mut writer, &mut reader, r);
            }
            (false, None) if needs_body => {
                let r = refuse(
                    411,
                    format!("{} needs a Content-Length header", head.method),
                );
                return refuse_and_close(&mut writer, &mut reader, r);
            }
            (false, n) => n.unwrap_or(0),
        };
        if len > MAX_BODY_BYTES {
            let r = refuse(413, format!("body of {len} bytes exceeds {MAX_BODY_BYTES}"));
            return refuse_and_close(&mut writer, &mut reader, r);
        }
        body.resize(len, 0);
        reader.get_mut().deadline = Instant::now() + opts.request_timeout;
        if let Err(e) = reader.read_exact(&mut body) {
            let r = if is_timeout(&e) {
                refuse(
                    408,
                    format!(
                        "body shorter than Content-Length ({len} bytes) after {:?}",
                        opts.request_timeout
                    ),
                )
            } else {
                refuse(400, "body shorter than Content-Length")
            };
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
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
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
