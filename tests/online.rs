//! Online mixing: each policy on a simulated environment with known per-domain
//! loss curves (library API, milliseconds), then `mixopt online` driven as a
//! process — JSON lines and HTTP, state save → restart → identical answers,
//! malformed requests — and `mixopt train --schedule` end to end.

use mixopt::online::{self, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use mixopt::Mixture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("d{i}")).collect()
}

fn policy(
    kind: PolicyKind,
    k: usize,
    params: &[&str],
    reference: Option<Vec<f64>>,
) -> Box<dyn OnlinePolicy> {
    let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    online::build(&PolicySpec {
        kind,
        prior: Mixture::uniform(names(k)).unwrap(),
        params: online::parse_params(&params).unwrap(),
        reference_losses: reference,
    })
    .unwrap()
}

fn argmax(w: &[f64]) -> usize {
    (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap()
}

/// A batch of `rows` rows sampled from the policy's weights; each sampled
/// domain reports its (noisy) loss. Returns per-domain observed losses.
fn sampled_losses(w: &[f64], truth: &[f64], rows: usize, rng: &mut StdRng) -> Vec<Option<f64>> {
    let mut out = vec![None; w.len()];
    for _ in 0..rows {
        let mut u: f64 = rng.random();
        let mut d = w.len() - 1;
        for (i, p) in w.iter().enumerate() {
            if u < *p {
                d = i;
                break;
            }
            u -= p;
        }
        out[d] = Some(truth[d] + 0.05 * (rng.random::<f64>() - 0.5));
    }
    out
}

#[test]
fn odm_shifts_weight_toward_the_highest_loss_domain() {
    // Constant training losses 2, 3, 4.5: the bandit's reward is the loss.
    let truth = [2.0, 3.0, 4.5];
    let mut p = policy(PolicyKind::Odm, 3, &[], None);
    let mut rng = StdRng::seed_from_u64(7);
    let none = [None; 3];
    for step in 0..2000 {
        let losses = sampled_losses(p.weights(), &truth, 4, &mut rng);
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &none,
        })
        .unwrap();
    }
    let w = p.weights().to_vec();
    assert_eq!(argmax(&w), 2, "{w:?}");
    assert!(w[2] > 1.0 / 3.0 && w[0] < 1.0 / 3.0, "{w:?}");
    assert!(w[0] < w[1] && w[1] < w[2], "{w:?}");
}

#[test]
fn doremi_shifts_weight_toward_the_largest_excess_loss() {
    // Excess over the reference: 0.1, 0.6, −0.2 (clipped to 0).
    let reference = vec![2.0, 2.0, 2.0];
    let current = [2.1, 2.6, 1.8];
    let mut p = policy(PolicyKind::Doremi, 3, &["eta=0.1"], Some(reference));
    let losses: Vec<Option<f64>> = current.iter().map(|&l| Some(l)).collect();
    let none = [None; 3];
    for step in 0..200 {
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &none,
        })
        .unwrap();
    }
    let w = p.weights();
    assert_eq!(argmax(w), 1, "{w:?}");
    assert!(w[0] > w[2], "positive excess beats clipped: {w:?}");
    // The output is the average over updates, still led by domain 1.
    let avg = p.result();
    assert_eq!(argmax(avg.weights()), 1, "{avg:?}");
    assert!(avg.weights()[1] < w[1], "the average lags the last weights");
}

#[test]
fn aioli_shifts_weight_toward_the_domain_whose_training_helps_most() {
    // Linear dynamic law L ← L − A w per interval: training on domain 2 lowers
    // every domain's loss (column 2 has the largest sum), domain 0 only itself.
    let a = [
        [0.020, 0.000, 0.010],
        [0.000, 0.010, 0.015],
        [0.000, 0.005, 0.030],
    ];
    let mut losses = [4.0, 4.0, 4.0];
    let mut p = policy(PolicyKind::Aioli, 3, &["round_updates=8", "eta=20"], None);
    let mut rng = StdRng::seed_from_u64(3);
    let none = [None; 3];
    for step in 0..80u64 {
        let w = p.weights().to_vec();
        for i in 0..3 {
            let drop: f64 = (0..3).map(|j| a[i][j] * w[j]).sum();
            losses[i] -= drop + 0.0005 * (rng.random::<f64>() - 0.5);
        }
        let obs: Vec<Option<f64>> = losses.iter().map(|&l| Some(l)).collect();
        p.observe(&Observation {
            step,
            losses: &obs,
            tokens: &none,
        })
        .unwrap();
    }
    let learned = p.result();
    let w = learned.weights();
    assert_eq!(argmax(w), 2, "{w:?}");
    assert!(w[2] > 0.5, "{w:?}");
}

#[test]
fn ado_shifts_weight_toward_the_domain_still_learning() {
    // Domain 0 is nearly saturated (small β), domain 1 keeps improving.
    let law = |d: usize, n: f64| {
        if d == 0 {
            2.0 + 0.5 * n.powf(-0.3)
        } else {
            2.0 + 40.0 * n.powf(-0.3)
        }
    };
    let mut p = policy(PolicyKind::Ado, 2, &[], None);
    let mut tokens = [1.0f64; 2];
    for step in 0..300u64 {
        let w = p.weights().to_vec();
        for d in 0..2 {
            tokens[d] += 4096.0 * w[d];
        }
        let losses: Vec<Option<f64>> = (0..2).map(|d| Some(law(d, tokens[d]))).collect();
        let toks: Vec<Option<f64>> = tokens.iter().map(|&n| Some(n)).collect();
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &toks,
        })
        .unwrap();
    }
    let w = p.weights();
    assert!(w[1] > 0.8, "{w:?}");
}

#[test]
fn a_bad_observation_leaves_the_policy_unchanged() {
    for kind in [
        PolicyKind::Odm,
        PolicyKind::Aioli,
        PolicyKind::Doremi,
        PolicyKind::Ado,
    ] {
        let mut p = policy(kind, 2, &[], Some(vec![1.0, 1.0]));
        let before = p.to_state();
        let bad = [Some(f64::NAN), Some(1.0)];
        let toks = [Some(1.0), Some(1.0)];
        assert!(p
            .observe(&Observation {
                step: 1,
                losses: &bad,
                tokens: &toks
            })
            .is_err());
        assert_eq!(p.to_state(), before, "{kind:?}");
    }
}

// ---------------------------------------------------------------- the binary

fn bin() -> String {
    env!("CARGO_BIN_EXE_mixopt").to_string()
}

/// Requests for `k` domains with losses falling like a power law.
fn requests(k: usize, n: usize, from: usize) -> Vec<String> {
    (from..from + n)
        .map(|t| {
            let losses: Vec<String> = (0..k)
                .map(|i| {
                    format!(
                        "\"d{i}\":{}",
                        2.0 + i as f64 * 0.3 + 3.0 * ((t + 1) as f64).powf(-0.4)
                    )
                })
                .collect();
            let tokens: Vec<String> = (0..k)
                .map(|i| format!("\"d{i}\":{}", (t + 1) * 1000 * (i + 1)))
                .collect();
            format!(
                "{{\"step\":{},\"losses\":{{{}}},\"tokens\":{{{}}}}}",
                (t + 1) * 10,
                losses.join(","),
                tokens.join(",")
            )
        })
        .collect()
}

/// Run `mixopt online` over `lines`; returns its stdout lines.
fn online_lines(args: &[&str], state: &Path, lines: &[String]) -> Vec<String> {
    let mut child = Command::new(bin())
        .arg("online")
        .args(args)
        .arg("--state")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn state_save_restart_gives_identical_next_responses() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<&str>); 4] = [
        ("odm", vec![]),
        ("aioli", vec!["--param", "round_updates=6"]),
        ("doremi", vec!["--reference", "d0=2.0,d1=2.2,d2=2.4,d3=2.6"]),
        ("ado", vec![]),
    ];
    let reqs = requests(4, 40, 0);
    for (policy, extra) in cases {
        let mut args = vec!["--policy", policy, "--domains", "d0,d1,d2,d3"];
        args.extend(extra);
        let whole = online_lines(
            &args,
            &tmp.path().join(format!("{policy}-whole.json")),
            &reqs,
        );
        let split_state = tmp.path().join(format!("{policy}-split.json"));
        let first = online_lines(&args, &split_state, &reqs[..23]);
        let second = online_lines(&args, &split_state, &reqs[23..]);
        // Each process first prints the current weights; a restarted one prints
        // the weights the stopped one last answered.
        assert_eq!(first[1..], whole[1..24], "{policy}");
        let resumed = second[0].replace("\"updated\":true", "\"updated\":false");
        let last = whole[23].replace("\"updated\":true", "\"updated\":false");
        assert_eq!(resumed, last, "{policy}");
        assert_eq!(
            second[1..],
            whole[24..],
            "{policy}: responses after restart differ"
        );
        assert!(
            whole.iter().all(|l| !l.contains("error")),
            "{policy}: {whole:?}"
        );
        // The state file names the policy and the step.
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&split_state).unwrap()).unwrap();
        assert_eq!(state["policy"], policy);
        assert_eq!(state["last_step"], 400);
    }
}

/// `online --trajectory` writes one row per committed update, resumes with
/// the state, and `export --trajectory` reads it as a schedule.
#[test]
fn online_trajectory_resumes_and_feeds_the_schedule_export() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s.json");
    let traj = tmp.path().join("t.csv");
    let mut reqs = requests(3, 10, 0);
    // A second update at the last step (the service allows it; the export
    // keeps the later row).
    reqs.push("{\"step\":100,\"losses\":{\"d0\":1.0,\"d1\":2.0,\"d2\":3.0}}".to_string());
    let args = [
        "--policy",
        "odm",
        "--domains",
        "d0,d1,d2",
        "--trajectory",
        traj.to_str().unwrap(),
    ];
    let first = online_lines(&args, &state, &reqs[..4]);
    let second = online_lines(&args, &state, &reqs[4..]);
    let text = std::fs::read_to_string(&traj).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "step,w_d0,w_d1,w_d2,loss_d0,loss_d1,loss_d2");
    // The starting mixture at step 0, then one row per update.
    assert_eq!(lines.len(), 2 + reqs.len(), "{text}");
    assert!(lines[1].starts_with("0,"), "{text}");
    // Each row holds the weights its response announced.
    for (row, resp) in lines[2..].iter().zip(first[1..].iter().chain(&second[1..])) {
        let v: serde_json::Value = serde_json::from_str(resp).unwrap();
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[0], v["step"].to_string(), "{row} vs {resp}");
        for (i, d) in ["d0", "d1", "d2"].iter().enumerate() {
            let w: f64 = cells[1 + i].parse().unwrap();
            assert_eq!(w, v["weights"][d].as_f64().unwrap(), "{row} vs {resp}");
        }
    }
    // A new state refuses a trajectory that already has rows.
    let out = Command::new(bin())
        .args(["online", "--policy", "odm", "--domains", "d0,d1,d2"])
        .arg("--state")
        .arg(tmp.path().join("other.json"))
        .arg("--trajectory")
        .arg(&traj)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has rows"));
    let sched = tmp.path().join("schedule.json");
    let out = Command::new(bin())
        .args(["export", "--format", "json", "--phases", "2"])
        .arg("--trajectory")
        .arg(&traj)
        .arg("--out")
        .arg(&sched)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sched).unwrap()).unwrap();
    assert!(v.to_string().contains("d2"), "{v}");
}

#[test]
fn malformed_lines_get_errors_and_leave_the_state_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s.json");
    let args = ["--policy", "odm", "--domains", "a,b"];
    let good = |step: u64| format!("{{\"step\":{step},\"losses\":{{\"a\":3.0,\"b\":2.0}}}}");
    let out = online_lines(&args, &state, &[good(5)]);
    assert_eq!(out.len(), 2);
    let before = std::fs::read(&state).unwrap();
    let bad = [
        "not json".to_string(),
        "{\"step\":6}".to_string(),
        "{\"step\":6,\"losses\":{\"zzz\":1.0}}".to_string(),
        "{\"step\":6,\"losses\":{\"a\":-1.0}}".to_string(),
        "{\"step\":6,\"losses\":{\"a\":\"x\"}}".to_string(),
        "{\"step\":6,\"losses\":{},\"extra\":1}".to_string(),
        "{\"step\":1,\"losses\":{\"a\":1.0}}".to_string(),
        "[1,2,3]".to_string(),
        "\u{1}\u{2}".to_string(),
        // Finite, but its importance-weighted reward overflows to inf.
        "{\"step\":6,\"losses\":{\"a\":1e308}}".to_string(),
    ];
    let out = online_lines(&args, &state, &bad);
    assert_eq!(out.len(), 1 + bad.len(), "{out:?}");
    for (i, l) in out[1..].iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error for {}: {l}", bad[i]));
        assert!(msg.starts_with(&format!("line {}:", i + 1)), "{msg}");
    }
    assert!(
        out[3].contains("losses.zzz") && out[3].contains("unknown domain"),
        "{}",
        out[3]
    );
    assert!(out[4].contains("losses.a"), "{}", out[4]);
    assert!(
        out[7].contains("before the last observed step 5"),
        "{}",
        out[7]
    );
    assert_eq!(std::fs::read(&state).unwrap(), before, "state file touched");
    // And the process still answers a good line after bad ones.
    let out = online_lines(&args, &state, &["garbage".into(), good(7)]);
    assert!(
        out[1].contains("error") && out[2].contains("\"step\":7"),
        "{out:?}"
    );
}

#[test]
fn a_mismatched_state_file_is_refused_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s.json");
    online_lines(&["--policy", "odm", "--domains", "a,b"], &state, &[]);
    let out = Command::new(bin())
        .args(["online", "--policy", "ado", "--domains", "a,b", "--state"])
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("field policy") && err.lines().count() <= 2,
        "{err}"
    );
    std::fs::write(&state, "{\"format_version\":1,").unwrap();
    let out = Command::new(bin())
        .args(["online", "--policy", "odm", "--domains", "a,b", "--state"])
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("s.json:1"), "{err}");
}

#[test]
fn an_edited_state_file_is_refused_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let reqs = requests(3, 4, 0);
    let doremi = ["--reference", "d0=2.0,d1=2.2,d2=2.4"];
    for (policy, field, extra) in [
        ("odm", "r_hat", &[][..]),
        ("aioli", "prev_losses", &[][..]),
        ("doremi", "avg", &doremi[..]),
        ("ado", "hist_loss", &[][..]),
    ] {
        let state = tmp.path().join(format!("{policy}.json"));
        let mut args = vec!["--policy", policy, "--domains", "d0,d1,d2"];
        args.extend_from_slice(extra);
        online_lines(&args, &state, &reqs);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        // Drop one domain's entry from a per-domain vector.
        let target = if field == "avg" {
            &mut v["state"]["avg"]["sum"]
        } else {
            &mut v["state"][field]
        };
        if let Some(a) = target.as_array_mut() {
            a.pop();
        } else {
            *target = serde_json::json!(["1.0"]);
        }
        std::fs::write(&state, v.to_string()).unwrap();
        let out = Command::new(bin())
            .arg("online")
            .args(&args)
            .arg("--state")
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                // The process may already have exited (refused): ignore EPIPE.
                let _ = writeln!(c.stdin.take().unwrap(), "{}", reqs[0]);
                c.wait_with_output()
            })
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && !err.contains("panicked")
                && err.contains(&format!("{policy}.json")),
            "{policy}: {err}"
        );
    }
}

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

// ------------------------------------------------------- train --schedule

const TEST_PROXY: &str = r#"
name = "test"
n_layers = 1
d_model = 32
n_heads = 2
d_ff = 64
seq_len = 32
batch_size = 8
n_steps = 40
lr_peak = 1e-2
warmup_steps = 4
eval_windows = 8
"#;

fn prepare(tmp: &Path) -> std::path::PathBuf {
    let mut cmd = Command::new(bin());
    cmd.env("MIXOPT_QUIET", "1")
        .arg("prepare")
        .arg("--cache")
        .arg(tmp.join("cache"));
    for (d, make) in [
        (
            "alpha",
            Box::new(|i: usize| {
                (0..300)
                    .map(|j| char::from(b'a' + ((i + j) % 7) as u8))
                    .collect::<String>()
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "digits",
            Box::new(|i: usize| (0..120).map(|j| format!("{} ", (i + j) % 10)).collect()),
        ),
        (
            "words",
            Box::new(|i: usize| ["the cat", "a dog", "one bird"][i % 3].repeat(30)),
        ),
    ] {
        let sub = tmp.join("corpus").join(d);
        std::fs::create_dir_all(&sub).unwrap();
        let lines: Vec<String> = (0..60)
            .map(|i| serde_json::json!({ "text": make(i) }).to_string())
            .collect();
        std::fs::write(sub.join("docs.jsonl"), lines.join("\n") + "\n").unwrap();
        cmd.arg("--domain")
            .arg(format!("{d}={}", sub.join("docs.jsonl").display()));
    }
    assert!(cmd.output().unwrap().status.success());
    std::fs::write(tmp.join("test.toml"), TEST_PROXY).unwrap();
    tmp.join("cache")
}

#[test]
fn train_schedule_writes_trajectory_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = prepare(tmp.path());
    for schedule in ["odm", "aioli", "doremi", "ado", "static"] {
        let traj = tmp.path().join(format!("{schedule}.csv"));
        let weights = tmp.path().join(format!("{schedule}.json"));
        let run = || {
            Command::new(bin())
                .env("MIXOPT_QUIET", "1")
                .args([
                    "train",
                    "--seed",
                    "3",
                    "--update-every-steps",
                    "2",
                    "--schedule",
                    schedule,
                    "--proxy",
                ])
                .arg(tmp.path().join("test.toml"))
                .arg("--cache")
                .arg(&cache)
                .arg("--trajectory")
                .arg(&traj)
                .arg("--weights-out")
                .arg(&weights)
                .output()
                .unwrap()
        };
        let out = run();
        assert!(
            out.status.success(),
            "{schedule}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&traj).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "step,w_alpha,w_digits,w_words,loss_alpha,loss_digits,loss_words",
            "{schedule}"
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let want_rows = if schedule == "static" { 1 } else { 1 + 39 / 2 };
        assert_eq!(rows.len(), want_rows, "{schedule}: {text}");
        for r in &rows {
            assert_eq!(r.len(), 7);
            let s: f64 = r[1..4].iter().map(|w| w.parse::<f64>().unwrap()).sum();
            assert!((s - 1.0).abs() < 1e-9, "{schedule}: {r:?}");
        }
        if schedule != "static" {
            // The policy moved the weights, and saw losses.
            assert!(
                rows.iter().any(|r| r[1..4] != rows[0][1..4]),
                "{schedule}: {text}"
            );
            assert!(
                rows[1..].iter().any(|r| !r[4].is_empty()),
                "{schedule}: {text}"
            );
        }
        let m = Mixture::load(&weights).unwrap();
        assert_eq!(m.domains(), ["alpha", "digits", "words"]);
        // Same seed, same run.
        let again = run();
        let strip = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with("wall"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&out), strip(&again), "{schedule}");
        assert_eq!(std::fs::read_to_string(&traj).unwrap(), text, "{schedule}");
    }
}
