//! Reading one request off a connection under deadlines and size limits:
//! the head (parsed by `httparse`) and a `Content-Length` or chunked body.
//! A failure is a [`Refusal`]: the status to answer and why.

use super::{IDLE_TIMEOUT, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads from the socket with an absolute deadline (std sockets only have
/// per-call timeouts: the remaining time is set before each read).
pub(super) struct DeadlineReader {
    pub(super) stream: TcpStream,
    pub(super) deadline: Instant,
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
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) msg: String,
}

pub(super) fn refuse(status: u16, msg: impl Into<String>) -> Refusal {
    Refusal {
        status,
        msg: msg.into(),
    }
}

pub(super) struct Head {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) body: BodyFraming,
    pub(super) keep_alive: bool,
    /// `Expect: 100-continue`: send `100 Continue` before reading the body.
    pub(super) expect_continue: bool,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: no body.
    None,
    Length(usize),
    Chunked,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Headers parsed per request at most (more: 431).
const MAX_HEADERS: usize = 100;

/// Read one request head; `Ok(None)` on a clean EOF (or idle timeout)
/// between requests. The head must be complete `timeout` after its first byte.
/// Lines are collected here (under the deadline and the size limit); the
/// request line and headers are parsed by `httparse`.
pub(super) fn read_head(
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
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - start + 1) as u64)
            .read_until(b'\n', &mut raw)
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
        if raw.len() > MAX_HEAD_BYTES {
            return Err(refuse(
                431,
                format!("request head larger than {MAX_HEAD_BYTES} bytes"),
            ));
        }
        let line = &raw[start..];
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                raw.clear(); // tolerate stray CRLF between requests
                continue;
            }
            break;
        }
    }
    parse_head(&raw).map(Some)
}

fn parse_head(raw: &[u8]) -> std::result::Result<Head, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(refuse(400, "malformed request head"));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, format!("more than {MAX_HEADERS} headers")));
        }
        Err(e) => {
            let first = raw.split(|&b| b == b'\n').next().unwrap_or(raw);
            return Err(refuse(
                400,
                format!(
                    "malformed request head ({e}): {:?}",
                    String::from_utf8_lossy(first).trim_end()
                ),
            ));
        }
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "malformed request line"));
    };
    let mut head = Head {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        body: BodyFraming::None,
        keep_alive: minor == 1,
        expect_continue: false,
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| refuse(400, format!("header {} is not UTF-8", h.name)))?
            .trim();
        match h.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n: usize = value.parse().map_err(|_| {
                    refuse(400, format!("Content-Length {value:?} is not a number"))
                })?;
                // Repeats must agree (RFC 9110 §8.6); differing ones are an
                // attack on framing, not a choice to make for the client.
                if length.is_some_and(|m| m != n) {
                    return Err(refuse(400, "two different Content-Length headers"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                // Only `chunked` alone: any other coding would have to be
                // undone before the JSON could be read.
                if !value.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(refuse(
                        501,
                        format!("Transfer-Encoding {value:?} is not supported (use chunked, or Content-Length)"),
                    ));
                }
                chunked = true;
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    head.keep_alive = false;
                } else if v.contains("keep-alive") {
                    head.keep_alive = true;
                }
            }
            "expect" => {
                if !value.eq_ignore_ascii_case("100-continue") {
                    return Err(refuse(417, format!("Expect {value:?} is not supported")));
                }
                head.expect_continue = true;
            }
            _ => {}
        }
    }
    head.body = match (chunked, length) {
        // Both: a request smuggling vector (RFC 9112 §6.1): refused.
        (true, Some(_)) => {
            return Err(refuse(
                400,
                "both Transfer-Encoding and Content-Length given",
            ))
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::None,
    };
    Ok(head)
}

/// Read a chunked body (RFC 9112 §7.1) of at most [`MAX_BODY_BYTES`] into
/// `body`; each chunk-size line is parsed by `httparse`, trailers are read and
/// dropped. Errors are refusals to answer.
fn read_chunked(
    reader: &mut BufReader<DeadlineReader>,
    body: &mut Vec<u8>,
    timeout: Duration,
) -> std::result::Result<(), Refusal> {
    let io = |e: std::io::Error| {
        if is_timeout(&e) {
            refuse(408, format!("chunked body not complete within {timeout:?}"))
        } else {
            refuse(400, format!("chunked body: {e}"))
        }
    };
    let mut line = Vec::new();
    // A chunk-size line or a trailer longer than this is refused.
    const MAX_LINE: u64 = 1024;
    let read_line = |reader: &mut BufReader<DeadlineReader>, line: &mut Vec<u8>| {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', line)
            .map_err(io)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(refuse(400, "chunked body cut short or a line too long"));
        }
        Ok(())
    };
    body.clear();
    loop {
        read_line(reader, &mut line)?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(refuse(400, "malformed chunk size line")),
        };
        if size == 0 {
            break;
        }
        let room = (MAX_BODY_BYTES - body.len()) as u64;
        if size > room {
            return Err(refuse(
                413,
                format!("chunked body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..]).map_err(io)?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).map_err(io)?;
        if &crlf != b"\r\n" {
            return Err(refuse(400, "chunk data not followed by CRLF"));
        }
    }
    // Trailer fields up to the empty line (bounded: 64 lines).
    for _ in 0..64 {
        read_line(reader, &mut line)?;
        if line == b"\r\n" || line == b"\n" {
            return Ok(());
        }
    }
    Err(refuse(400, "too many trailer lines"))
}

/// Read the body `head` announces into `body`, within `timeout`.
pub(super) fn read_body(
    reader: &mut BufReader<DeadlineReader>,
    head: &Head,
    body: &mut Vec<u8>,
    timeout: Duration,
) -> std::result::Result<(), Refusal> {
    reader.get_mut().deadline = Instant::now() + timeout;
    match head.body {
        BodyFraming::None => {
            body.clear();
            Ok(())
        }
        BodyFraming::Length(len) => {
            body.resize(len, 0);
            reader.read_exact(body).map_err(|e| {
                if is_timeout(&e) {
                    refuse(
                        408,
                        format!("body shorter than Content-Length ({len} bytes) after {timeout:?}"),
                    )
                } else {
                    refuse(400, "body shorter than Content-Length")
                }
            })
        }
        BodyFraming::Chunked => read_chunked(reader, body, timeout),
    }
}
