//! Loopback load generator for `mixopt online --listen` (used by
//! `bench/online_http_load.sh`): keep-alive `POST /observe` requests over
//! several connections. A connection that fails is counted and reopened, so
//! a run against a struggling server reports what it served instead of
//! stopping at the first reset. A benchmark tool, not part of the library.
//!
//! ```sh
//! cargo build --release --example online_loadgen
//! target/release/examples/online_loadgen 127.0.0.1:8377 --domains a,b,c \
//!   --requests 20000 --connections 4
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// The server's address (loopback only), e.g. 127.0.0.1:8377.
    addr: String,
    /// The server's domains, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    domains: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let addr: SocketAddr = args
        .addr
        .parse()
        .with_context(|| format!("{}: expected IP:PORT", args.addr))?;
    let r = load_test(
        addr,
        &args.domains,
        args.requests,
        args.connections,
        args.max_seconds,
    )?;
    println!(
        "{} requests ({} ok, {} errors, {} unanswered) over {} connections in {:.3} s: {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms",
        r.ok + r.errors + r.failed,
        r.ok,
        r.errors,
        r.failed,
        args.connections,
        r.wall_s,
        r.requests_per_s(),
        r.p50_ms,
        r.p99_ms
    );
    Ok(())
}

/// What [`load_test`] measured.
#[derive(Debug, Default, Clone)]
struct LoadReport {
    /// Requests answered 200.
    ok: usize,
    /// Requests answered with another status.
    errors: usize,
    /// Requests that got no answer (connection refused, reset or closed).
    failed: usize,
    wall_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl LoadReport {
    fn requests_per_s(&self) -> f64 {
        (self.ok + self.errors) as f64 / self.wall_s.max(1e-9)
    }
}

/// One request and its answer's status on a keep-alive connection.
fn request(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    body: &str,
) -> std::io::Result<u16> {
    write!(
        stream,
        "POST /observe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let (mut len, mut status) = (0usize, 0u16);
    let mut line = String::new();
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
    Ok(status)
}

fn connect(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// `n` keep-alive `POST /observe` requests over `connections` connections,
/// giving up after `max_s` seconds. Refuses any address but loopback.
fn load_test(
    addr: SocketAddr,
    domains: &[String],
    n: usize,
    connections: usize,
    max_s: f64,
) -> Result<LoadReport> {
    if !addr.ip().is_loopback() {
        bail!("load test target {addr}: only loopback addresses are allowed");
    }
    let connections = connections.clamp(1, 64);
    let per = n.div_ceil(connections);
    let mut report = LoadReport::default();
    let mut lat = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(max_s);
        let workers: Vec<_> = (0..connections)
            .map(|c| {
                let domains = domains.to_vec();
                scope.spawn(move || {
                    let (mut ok, mut bad, mut failed) = (0usize, 0usize, 0usize);
                    let mut lat = Vec::with_capacity(per);
                    let mut conn = None;
                    for i in 0..per {
                        if Instant::now() > deadline {
                            break;
                        }
                        // Losses unique per request, so none is taken for a retry.
                        let losses: Vec<String> = domains
                            .iter()
                            .enumerate()
                            .map(|(j, d)| {
                                let v = 2.0
                                    + ((i + j + c) % 7) as f64 * 0.1
                                    + (i * 64 + c) as f64 * 1e-9;
                                format!("\"{d}\":{v}")
                            })
                            .collect();
                        let body = format!("{{\"step\":1,\"losses\":{{{}}}}}", losses.join(","));
                        let t0 = Instant::now();
                        if conn.is_none() {
                            conn = connect(addr).ok();
                        }
                        let answer = match conn.as_mut() {
                            Some((s, r)) => request(s, r, &body),
                            None => Err(std::io::Error::other("cannot connect")),
                        };
                        match answer {
                            Ok(status) => {
                                lat.push(t0.elapsed().as_secs_f64());
                                if status == 200 {
                                    ok += 1;
                                } else {
                                    bad += 1;
                                    conn = None; // error answers close the connection
                                }
                            }
                            Err(_) => {
                                failed += 1;
                                conn = None;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    (ok, bad, failed, lat)
                })
            })
            .collect();
        for w in workers {
            let (ok, bad, failed, l) = w
                .join()
                .map_err(|_| anyhow::anyhow!("load test thread panicked"))?;
            report.ok += ok;
            report.errors += bad;
            report.failed += failed;
            lat.extend(l);
        }
        report.wall_s = started.elapsed().as_secs_f64();
        Ok(())
    })?;
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
