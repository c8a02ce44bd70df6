//! `mixopt online --http`: the routes, and malformed requests survived.

use super::*;

/// Send raw bytes, return (status, body) of the one response.
fn http(port: u16, raw: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn post(port: u16, body: &str) -> (u16, String) {
    let raw = format!(
        "POST /observe HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(port, raw.as_bytes())
}

#[test]
fn http_serves_observe_weights_healthz_and_survives_malformed_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s.json");
    let mut child = Command::new(bin())
        .args([
            "online",
            "--policy",
            "odm",
            "--domains",
            "a,b",
            "--listen",
            "127.0.0.1:0",
            "--state",
        ])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            http(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").0,
            200
        );
        let (st, body) = post(port, "{\"step\":1,\"losses\":{\"a\":3.0,\"b\":2.0}}");
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("\"updated\":true"), "{body}");
        let before = std::fs::read(&state).unwrap();
        let malformed: [&[u8]; 5] = [
            b"GARBAGE\r\n\r\n",
            b"POST /observe HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}",
            b"POST /observe HTTP/1.1\r\nContent-Length: 32\r\n\r\n{\"step\":2,\"losses\":{\"c\":1.0}}   ",
            b"POST /observe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"DELETE /weights HTTP/1.1\r\n\r\n",
        ];
        // An empty chunked body is read, then refused as JSON (400).
        let want = [400, 400, 400, 400, 405];
        for (raw, code) in malformed.iter().zip(want) {
            let (st, body) = http(port, raw);
            assert_eq!(st, code, "{}: {body}", String::from_utf8_lossy(raw));
            assert!(body.contains("\"error\""), "{body}");
        }
        let (_, body) = http(port, b"POST /observe HTTP/1.1\r\nContent-Length: 32\r\n\r\n{\"step\":2,\"losses\":{\"c\":1.0}}   ");
        assert!(body.contains("losses.c: unknown domain"), "{body}");
        assert_eq!(http(port, b"GET /nowhere HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(
            std::fs::read(&state).unwrap(),
            before,
            "state touched by bad requests"
        );
        let (st, w) = http(port, b"GET /weights HTTP/1.1\r\n\r\n");
        assert!(st == 200 && w.contains("\"step\":1"), "{w}");
        // Keep-alive: two requests on one connection.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let body = "{\"step\":3,\"losses\":{\"a\":3.0}}";
        let req = format!(
            "POST /observe HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(format!("{req}{req}").as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut text = String::new();
        while text.matches("\"policy\"").count() < 2 {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap() == 0 {
                break;
            }
            text += &l;
        }
        assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    });
    child.kill().unwrap();
    child.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    // Restart from the state: same weights as the last answer.
    let out = online_lines(&["--policy", "odm", "--domains", "a,b"], &state, &[]);
    assert!(out[0].contains("\"step\":3"), "{out:?}");
}
