//! `mixopt online` against hostile and unlucky clients, on 127.0.0.1: slow
//! clients crowding the server, stalled bodies, oversized or ambiguous
//! framing, a request retried after the server died before answering, a
//! second server on the same state, an oversized JSON line. Every wait is
//! bounded (socket timeouts), so a regression fails instead of hanging.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> String {
    env!("CARGO_BIN_EXE_mixopt").to_string()
}

/// A running `mixopt online --listen 127.0.0.1:0`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(state: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .args(["online", "--policy", "odm", "--domains", "a,b"])
            .args(["--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("no address in {line:?}");
        };
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    }

    /// Send raw bytes on a fresh connection; the status and body of the answer.
    fn raw(&self, bytes: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        s.write_all(bytes).unwrap();
        read_response(&mut BufReader::new(s))
            .unwrap_or_else(|e| panic!("no answer to {:?}: {e}", preview(bytes)))
    }

    fn post(&self, body: &str) -> (u16, String) {
        self.raw(
            format!(
                "POST /observe HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    /// kill -9.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn preview(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn state_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tmp_state() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    (tmp, state)
}

#[test]
fn a_crowd_of_slow_clients_does_not_lock_out_real_ones() {
    let (_tmp, state) = tmp_state();
    let server = Server::start(&state, &[]);
    // More connections than the server holds (256): half never send a byte,
    // half stop inside their request head. Before: every later request got 503.
    let mut crowd = Vec::new();
    for i in 0..300 {
        let mut s = server.connect();
        if i % 2 == 1 {
            s.write_all(b"POST /observe HTTP/1.1\r\nHost: x\r\nContent-Le")
                .unwrap();
        }
        crowd.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (st, body) = server.raw(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(st, 200, "{body}");
    let (st, body) = server.post("{\"step\":1,\"losses\":{\"a\":3.0,\"b\":2.0}}");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"updated\":true"), "{body}");
    // The crowd was cut down to make room: some of it is closed by now.
    let is_closed = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match (&*s).read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    };
    let closed = crowd.iter().filter(|s| is_closed(s)).count();
    assert!(closed >= 2, "no slow connection was evicted ({closed})");
}

#[test]
fn a_stalled_head_or_body_is_cut_off_at_the_deadline() {
    let (_tmp, state) = tmp_state();
    let server = Server::start(&state, &["--request-timeout-s", "1"]);
    // A body shorter than its Content-Length: 408 after the deadline, not a
    // thread held for minutes.
    let mut s = server.connect();
    s.write_all(b"POST /observe HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"step\":")
        .unwrap();
    let t0 = Instant::now();
    let (st, body) = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(st, 408, "{body}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // A head trickled one byte at a time is cut off too (a deadline, not a
    // per-read timeout): 16 bytes over 1.6 s, past the 1 s deadline.
    let mut s = server.connect();
    for b in b"GET /healthz HTTP".iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, _) = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(st, 408);
}

#[test]
fn framing_errors_get_their_status_not_a_reset() {
    let (_tmp, state) = tmp_state();
    let server = Server::start(&state, &[]);
    // Headers far past the 16 KiB limit: 431, and the answer arrives.
    let mut big = b"GET /healthz HTTP/1.1\r\n".to_vec();
    for i in 0..1000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(60)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    assert!(big.len() > 64 * 1024);
    assert_eq!(server.raw(&big).0, 431);
    // POST without Content-Length: 411, not a JSON parse error.
    let (st, body) = server.raw(b"POST /observe HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(st, 411, "{body}");
    // Two different Content-Lengths: refused, not "the last one wins".
    let (st, body) = server.raw(
        b"POST /observe HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n{\"step\":1,\"losses\":{\"a\":3.0,\"b\":2.0}}",
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("Content-Length"), "{body}");
    // A domain given twice in one request: refused, state untouched.
    let before = std::fs::read(&state).unwrap();
    let (st, body) = server.post("{\"step\":1,\"losses\":{\"a\":3.0,\"a\":9.0,\"b\":2.0}}");
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\\\"a\\\" given twice"), "{body}");
    let (st, body) = server.post("{\"step\":1,\"step\":2,\"losses\":{\"a\":3.0}}");
    assert_eq!(st, 400, "{body}");
    assert_eq!(std::fs::read(&state).unwrap(), before);
}

/// Chunked request bodies are read (split anywhere, with an extension and a
/// trailer), `Expect: 100-continue` gets its interim answer before the body
/// is sent, and bad chunked framing gets its status, the state untouched.
#[test]
fn chunked_bodies_and_expect_continue_are_served() {
    let (_tmp, state) = tmp_state();
    let server = Server::start(&state, &[]);
    let (st, body) = server.raw(
        b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          a\r\n{\"step\":1,\r\n1b;ext=1\r\n\"losses\":{\"a\":3.0,\"b\":2.0}}\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"updated\":true"), "{body}");
    assert_eq!(state_file(&state)["n_updates"], 1);
    // Expect: 100-continue: the client waits for `100 Continue`, then sends.
    let payload = "{\"step\":2,\"losses\":{\"a\":3.0,\"b\":2.0}}";
    let mut s = server.connect();
    write!(
        s,
        "POST /observe HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (st, _) = read_response(&mut r).unwrap();
    assert_eq!(st, 100);
    s.write_all(payload.as_bytes()).unwrap();
    let (st, body) = read_response(&mut r).unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(state_file(&state)["n_updates"], 2);
    let before = std::fs::read(&state).unwrap();
    for (raw, want) in [
        // Not hex.
        (&b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"[..], 400),
        // Chunk data longer than its size.
        (b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n", 400),
        // Both framings (a smuggling vector).
        (b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n0\r\n\r\n", 400),
        // A chunk past the body limit.
        (b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n", 413),
        (b"POST /observe HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /observe HTTP/1.1\r\nContent-Length: 2\r\nExpect: later\r\n\r\n{}", 417),
    ] {
        let (st, body) = server.raw(raw);
        assert_eq!(st, want, "{}: {body}", preview(raw));
        assert!(body.contains("\"error\""), "{body}");
    }
    assert_eq!(std::fs::read(&state).unwrap(), before);
}

#[test]
fn a_request_retried_after_a_crash_is_applied_once() {
    let (_tmp, state) = tmp_state();
    let body = "{\"step\":10,\"losses\":{\"a\":3.0,\"b\":2.0}}";
    let server = Server::start(&state, &[]);
    let (st, first) = server.post(body);
    assert_eq!(st, 200, "{first}");
    assert_eq!(state_file(&state)["n_updates"], 1);
    // The server dies after saving the state; the trainer never saw the
    // answer and sends the same request again to the restarted server.
    server.kill();
    let server = Server::start(&state, &[]);
    let (st, again) = server.post(body);
    assert_eq!(st, 200, "{again}");
    assert!(again.contains("\"replayed\":true"), "{again}");
    assert_eq!(
        state_file(&state)["n_updates"],
        1,
        "the retry updated again"
    );
    let weights = |r: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(r).unwrap()["weights"].clone()
    };
    assert_eq!(weights(&again), weights(&first));
    // With request ids: a retry of an older request is recognized too.
    let with_id = |id: &str, step: u32, a: f64| {
        format!("{{\"step\":{step},\"request_id\":\"{id}\",\"losses\":{{\"a\":{a},\"b\":2.0}}}}")
    };
    assert!(server
        .post(&with_id("r11", 11, 2.9))
        .1
        .contains("\"updated\""));
    assert!(server
        .post(&with_id("r12", 12, 2.8))
        .1
        .contains("\"updated\""));
    server.kill();
    let server = Server::start(&state, &[]);
    let (st, r) = server.post(&with_id("r11", 11, 2.9));
    assert!(st == 200 && r.contains("\"replayed\":true"), "{r}");
    assert_eq!(state_file(&state)["n_updates"], 3);
    // A new request at the same step is still an update.
    let (st, r) = server.post(&with_id("r12b", 12, 2.7));
    assert!(st == 200 && !r.contains("replayed"), "{r}");
    assert_eq!(state_file(&state)["n_updates"], 4);
}

#[test]
fn a_second_server_on_one_state_is_refused() {
    let (_tmp, state) = tmp_state();
    let first = Server::start(&state, &[]);
    assert_eq!(first.post("{\"step\":1,\"losses\":{\"a\":3.0}}").0, 200);
    let out = Command::new(bin())
        .args(["online", "--policy", "odm", "--domains", "a,b", "--state"])
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second server ran: {err}");
    assert!(
        err.contains("locked by another running mixopt online"),
        "{err}"
    );
    // The first one's updates are all there.
    assert_eq!(first.post("{\"step\":2,\"losses\":{\"a\":2.0}}").0, 200);
    assert_eq!(state_file(&state)["n_updates"], 2);
    // Once it is gone, the state can be served again.
    first.kill();
    let again = Server::start(&state, &[]);
    assert_eq!(again.post("{\"step\":3,\"losses\":{\"a\":2.0}}").0, 200);
    assert_eq!(state_file(&state)["n_updates"], 3);
}

/// Peak resident memory of a running process (Linux), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn an_oversized_json_line_is_skipped_in_bounded_memory() {
    let (_tmp, state) = tmp_state();
    let mut child = Command::new(bin())
        .args(["online", "--policy", "odm", "--domains", "a,b", "--state"])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap(); // the current weights
                                       // 128 MiB on one line, then a good request.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..128 {
        stdin.write_all(&chunk).unwrap();
    }
    stdin
        .write_all(b"\n{\"step\":1,\"losses\":{\"a\":3.0}}\n")
        .unwrap();
    stdin.flush().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("longer than"), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("\"updated\":true"), "{line}");
    let peak_mib = peak_rss_kib(child.id()) / 1024;
    drop(stdin);
    assert!(child.wait().unwrap().success());
    // Before: the skipped line was held whole (128 MiB and more).
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB for a 128 MiB line");
}

#[test]
fn json_lines_retries_are_applied_once() {
    let (_tmp, state) = tmp_state();
    let req = "{\"step\":5,\"losses\":{\"a\":3.0,\"b\":2.5}}";
    let mut child = Command::new(bin())
        .args(["online", "--policy", "odm", "--domains", "a,b", "--state"])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{req}\n{req}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains("\"updated\":true"), "{text}");
    assert!(lines[2].contains("\"replayed\":true"), "{text}");
    assert_eq!(state_file(&state)["n_updates"], 1);
}
