//! A small HTTP/1.1 server for [`Service`] on std's `TcpListener`: one thread
//! per connection (capped), keep-alive, `Content-Length` bodies only.
//!
//! Routes: `POST /observe` (a request as on the JSON-lines surface),
//! `GET /weights`, `GET /healthz`. Malformed HTTP gets `400` and the
//! connection is closed; a malformed observe body gets `400` with
//! `{"error": …}` and the state is untouched. No dependency: the protocol
//! subset a trainer's `requests`/`urllib` client speaks is small, and a web
//! framework would cost more build time than the whole of this file.

use super::service::{error_json, Service};
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (a 10,000-domain request fits).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Concurrent connections; more are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Serve until the process is stopped. `on_ready` gets the bound address
/// (useful with port 0).
pub fn serve(service: Service, addr: &str, on_ready: impl FnOnce(SocketAddr)) -> Result<()> {
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
    let live = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = write_response(&mut stream, 503, &error_json("too many connections"), false);
            continue;
        }
        live.fetch_add(1, Ordering::SeqCst);
        let service = Arc::clone(&service);
        let counter = Arc::clone(&live);
        let spawned = std::thread::Builder::new()
            .name("online-http".into())
            .spawn(move || {
                let _ = handle_connection(stream, &service);
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

struct Head {
    method: String,
    path: String,
    content_length: Option<usize>,
    keep_alive: bool,
    chunked: bool,
}

/// Read one request head; `Ok(None)` on a clean EOF between requests.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::result::Result<Option<Head>, String> {
    let mut line = Vec::new();
    let mut total = 0usize;
    let mut lines: Vec<String> = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err("connection closed inside the request head".into());
        }
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(format!("request head larger than {MAX_HEAD_BYTES} bytes"));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| "request head is not UTF-8".to_string())?
            .trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(text.to_string());
    }
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {:?}", lines[0]));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported protocol {version:?}"));
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
            return Err(format!("malformed header {h:?}"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.content_length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("Content-Length {value:?} is not a number"))?,
                )
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
    Ok(Some(head))
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
        let pending = match g.service.prepare(body) {
            Ok(p) => p,
            Err(e) => return (400, error_json(&e.to_string())),
        };
        let response = g.service.commit(pending);
        g.applied += 1;
        let me = g.applied;
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

fn handle_connection(stream: TcpStream, service: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(msg) => {
                return write_response(&mut writer, 400, &error_json(&msg), false);
            }
        };
        if head.chunked {
            let msg = "chunked request bodies are not supported: send Content-Length";
            return write_response(&mut writer, 411, &error_json(msg), false);
        }
        let len = head.content_length.unwrap_or(0);
        if len > MAX_BODY_BYTES {
            let msg = format!("body of {len} bytes exceeds {MAX_BODY_BYTES}");
            return write_response(&mut writer, 413, &error_json(&msg), false);
        }
        body.resize(len, 0);
        if reader.read_exact(&mut body).is_err() {
            return write_response(
                &mut writer,
                400,
                &error_json("body shorter than Content-Length"),
                false,
            );
        }
        let (status, text) = route(&head, &body, service);
        write_response(&mut writer, status, &text, head.keep_alive)?;
        if !head.keep_alive {
            return Ok(());
        }
    }
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
        411 => "Length Required",
        413 => "Payload Too Large",
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

/// A bounded loopback load generator for `bench/online_http_load.sh`: `n`
/// keep-alive `POST /observe` requests over `connections` connections, giving up
/// after `max_s` seconds. Refuses any address but loopback.
pub fn load_test(
    addr: SocketAddr,
    domains: &[String],
    n: usize,
    connections: usize,
    max_s: f64,
) -> Result<LoadReport> {
    if !addr.ip().is_loopback() {
        return Err(Error::invalid(format!(
            "load test target {addr}: only loopback addresses are allowed"
        )));
    }
    let connections = connections.clamp(1, 64);
    let per = n.div_ceil(connections);
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(max_s);
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let domains = domains.to_vec();
            std::thread::spawn(move || -> std::io::Result<(usize, usize, Vec<f64>)> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let (mut ok, mut bad) = (0usize, 0usize);
                let mut lat = Vec::with_capacity(per);
                let mut line = String::new();
                for i in 0..per {
                    if std::time::Instant::now() > deadline {
                        break;
                    }
                    let losses: Vec<String> = domains
                        .iter()
                        .enumerate()
                        .map(|(j, d)| format!("\"{d}\":{}", 2.0 + ((i + j + c) % 7) as f64 * 0.1))
                        .collect();
                    let body = format!("{{\"step\":1,\"losses\":{{{}}}}}", losses.join(","));
                    let t0 = std::time::Instant::now();
                    write!(
                        stream,
                        "POST /observe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )?;
                    let mut len = 0usize;
                    let mut status = 0u16;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line)? == 0 {
                            return Err(std::io::Error::other("server closed the connection"));
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
                            status = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
                        } else if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut buf = vec![0u8; len];
                    reader.read_exact(&mut buf)?;
                    lat.push(t0.elapsed().as_secs_f64());
                    if status == 200 {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                }
                Ok((ok, bad, lat))
            })
        })
        .collect();
    let mut report = LoadReport::default();
    let mut lat = Vec::new();
    for h in handles {
        let (ok, bad, l) = h
            .join()
            .map_err(|_| Error::invalid("load test thread panicked"))?
            .map_err(|e| Error::invalid(format!("load test against {addr}: {e}")))?;
        report.ok += ok;
        report.errors += bad;
        lat.extend(l);
    }
    report.wall_s = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    report.p50_ms = q(0.5) * 1e3;
    report.p99_ms = q(0.99) * 1e3;
    Ok(report)
}

/// What [`load_test`] measured.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: usize,
    pub errors: usize,
    pub wall_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadReport {
    pub fn requests_per_s(&self) -> f64 {
        (self.ok + self.errors) as f64 / self.wall_s.max(1e-9)
    }
}
