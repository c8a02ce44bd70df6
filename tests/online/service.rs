//! `mixopt online` over JSON lines as a process: state save and restart,
//! the trajectory, malformed lines, refused state files.

use super::*;

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
