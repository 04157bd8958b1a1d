//! The daemon's outputs as operators run them, with the real daemon and real processes: the
//! `--json` events file rotated by size under load and reopened on SIGUSR1 after a rename (as
//! logrotate does), with no event lost, doubled or split; `--log-format json` making every
//! stderr line a JSON object; bad values refused with exit 2 naming the flag.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nhiscope_tests::{clickhouse::free_port, nhiscope_bin, require_root_bpf, temp_dir, Daemon};
use serde_json::Value;

/// A credential file and a registry naming it.
fn registry(dir: &Path) -> (PathBuf, String) {
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").unwrap_or_else(|e| panic!("{e}"));
    let yaml = format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n",
        cred.display()
    );
    (cred, yaml)
}

/// A python3 process that reads `cred` `n` times, a little apart (`pause` seconds), started
/// now.
fn reader(cred: &Path, n: u32, pause: f64) -> std::process::Child {
    let script = format!(
        "import time\nfor i in range({n}):\n    open('{}').read()\n    time.sleep({pause})\n",
        cred.display()
    );
    Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"))
}

fn finish(mut child: std::process::Child) {
    let status = child.wait().unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(status.success(), "{status}");
}

/// Every line of `files`, each of which must parse as JSON (a split line would not).
fn all_events(files: &[PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in the middle of a line",
            f.display()
        );
        for l in text.lines() {
            out.push(
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: a line is not JSON ({e}): {l}", f.display())),
            );
        }
    }
    out
}

/// The events file and its rotated copies, oldest first.
fn event_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u32, PathBuf)> = Vec::new();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for e in std::fs::read_dir(path.parent().unwrap_or(Path::new("/")))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == name {
            files.push((0, e.path()));
        } else if let Some(k) = n
            .strip_prefix(&format!("{name}."))
            .and_then(|k| k.parse().ok())
        {
            files.push((k, e.path()));
        }
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files.into_iter().map(|(_, p)| p).collect()
}

/// Opens of `cred` by each pid, over `files`.
fn opens_by_pid(files: &[PathBuf], cred: &Path) -> HashMap<u64, usize> {
    let mut by = HashMap::new();
    for e in all_events(files) {
        if e["kind"] == "open" && e["path"] == cred.to_string_lossy().as_ref() {
            *by.entry(e["pid"].as_u64().unwrap_or(0)).or_default() += 1;
        }
    }
    by
}

/// Waits until `pred` holds, for at most `within`.
fn wait_until(within: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_json_file_rotates_by_size_under_load_losing_and_splitting_nothing() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("rotate")).unwrap_or_else(|e| panic!("{e}"));
    let (cred, reg) = registry(&dir);
    let max: u64 = 64 * 1024;
    let d = Daemon::start_with(
        &reg,
        &[
            "--json-max-size".as_ref(),
            "64K".as_ref(),
            "--json-keep".as_ref(),
            "500".as_ref(),
        ],
    );
    let n = 3000;
    let child = reader(&cred, n, 0.0);
    let pid = u64::from(child.id());
    finish(child);
    wait_until(Duration::from_secs(30), "every read in the files", || {
        opens_by_pid(&event_files(d.events_path()), &cred)
            .get(&pid)
            .copied()
            >= Some(n as usize)
    });
    let events_path = d.events_path().to_owned();
    let (status, _) = d.stop_with_output();
    assert!(status.success(), "{status}");

    let files = event_files(&events_path);
    assert!(
        files.len() >= 10,
        "3000 events rotate through many files: {files:?}"
    );
    let by = opens_by_pid(&files, &cred);
    assert_eq!(
        by.get(&pid).copied(),
        Some(n as usize),
        "each read once, none lost"
    );
    let longest = all_events(&files)
        .iter()
        .map(|e| e.to_string().len() as u64 + 1)
        .max()
        .unwrap_or(0);
    for f in &files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(
            size <= max + longest,
            "{}: {size} bytes, limit {max}",
            f.display()
        );
        // Rotation happens before a line would cross the limit: only a file whose first
        // line alone is larger may pass it.
        assert!(size <= max, "{}: {size} bytes > {max}", f.display());
    }
    let mut seqs: Vec<_> = all_events(&files)
        .iter()
        .filter(|e| e["kind"] == "open" && e["pid"] == pid)
        .map(|e| e["ts"].as_str().unwrap_or_default().to_owned())
        .collect();
    let sorted = {
        let mut s = seqs.clone();
        s.sort();
        s
    };
    assert_eq!(
        seqs, sorted,
        "the files, oldest first, hold the events in order"
    );
    seqs.dedup();
    assert!(seqs.len() > 1);
}

#[test]
fn sigusr1_after_a_rename_moves_writing_to_a_new_file_and_loses_nothing() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("reopen")).unwrap_or_else(|e| panic!("{e}"));
    let (cred, reg) = registry(&dir);
    let d = Daemon::start(&reg);
    let path = d.events_path().to_owned();
    let rotated = path.with_extension("jsonl.1");
    // Reads go on all along, across the rename and the signal.
    let busy = reader(&cred, 400, 0.005);
    let busy_pid = u64::from(busy.id());
    wait_until(Duration::from_secs(10), "the first reads", || {
        opens_by_pid(std::slice::from_ref(&path), &cred)
            .get(&busy_pid)
            .copied()
            >= Some(20)
    });
    std::fs::rename(&path, &rotated).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: kill has no memory-safety preconditions; the pid is the test's own child.
    let sent = unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
    wait_until(Duration::from_secs(10), "the reopen", || {
        d.output()
            .iter()
            .any(|l| l.contains("SIGUSR1: reopened --json"))
    });
    assert!(path.exists(), "the file is made again at once");
    let after = reader(&cred, 50, 0.0);
    let after_pid = u64::from(after.id());
    finish(after);
    finish(busy);
    let both = [rotated.clone(), path.clone()];
    wait_until(Duration::from_secs(20), "every read in the files", || {
        let by = opens_by_pid(&both, &cred);
        by.get(&busy_pid).copied() >= Some(400) && by.get(&after_pid).copied() >= Some(50)
    });
    let (status, lines) = d.stop_with_output();
    assert!(status.success(), "{status}: {lines:?}");
    let by = opens_by_pid(&both, &cred);
    assert_eq!(
        by.get(&busy_pid).copied(),
        Some(400),
        "each read once across the rename"
    );
    assert_eq!(by.get(&after_pid).copied(), Some(50));
    let new = opens_by_pid(std::slice::from_ref(&path), &cred);
    assert_eq!(
        new.get(&after_pid).copied(),
        Some(50),
        "later events go to the new file"
    );
    let old = opens_by_pid(std::slice::from_ref(&rotated), &cred);
    assert!(old.get(&busy_pid).copied() >= Some(20), "{old:?}");
    assert!(
        !old.contains_key(&after_pid),
        "nothing after the reopen in the old file"
    );
}

#[test]
fn with_log_format_json_every_stderr_line_is_a_json_object() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("logjson")).unwrap_or_else(|e| panic!("{e}"));
    let (cred, reg) = registry(&dir);
    // An unreachable ClickHouse (errors logged) with a password that must show nowhere.
    let canary = "log-canary-pw-5d1e";
    let pw = dir.join("pw");
    std::fs::write(&pw, canary).unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.join("ch.yaml");
    std::fs::write(
        &cfg,
        format!(
            "url: https://127.0.0.1:{}\nuser: writer\npassword_file: {}\nspool_dir: {}\n\
             batch_interval: 100ms\n",
            free_port(),
            pw.display(),
            dir.join("spool").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start_with(
        &reg,
        &[
            "--log-format".as_ref(),
            "json".as_ref(),
            "--log-level".as_ref(),
            "debug".as_ref(),
            "--clickhouse-config".as_ref(),
            cfg.as_os_str(),
        ],
    );
    let child = reader(&cred, 5, 0.0);
    finish(child);
    wait_until(
        Duration::from_secs(20),
        "the store's failure in the log",
        || {
            d.output()
                .iter()
                .any(|l| l.contains("keeping events in the spool"))
        },
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is the test's own child.
    unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGUSR1) };
    wait_until(Duration::from_secs(10), "the reopen", || {
        d.output().iter().any(|l| l.contains("SIGUSR1"))
    });
    let (status, lines) = d.stop_with_output();
    assert!(status.success(), "{status}");
    let stderr: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("stdout: "))
        .collect();
    assert!(stderr.len() >= 4, "{stderr:?}");
    let mut levels = Vec::new();
    for l in &stderr {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {l}"));
        assert!(v["message"].is_string(), "no message: {l}");
        assert!(v["target"].is_string(), "no target: {l}");
        assert!(
            humantime::parse_rfc3339(v["timestamp"].as_str().unwrap_or_default()).is_ok(),
            "no timestamp: {l}"
        );
        assert!(!l.contains(canary), "the password shows: {l}");
        levels.push(level.to_owned());
    }
    let ready = stderr
        .iter()
        .find(|l| l.contains("ready:"))
        .unwrap_or_else(|| panic!("{stderr:?}"));
    let ready: Value = serde_json::from_str(ready).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready["level"], "INFO");
    assert!(ready["fields"]["probes"].as_u64() > Some(0), "{ready}");
    assert!(levels.iter().any(|l| l == "ERROR"), "{levels:?}");
    assert!(levels.iter().any(|l| l == "DEBUG"), "{levels:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&"\"message\":\"ClickHouse https://127.0.0.1:".to_string())),
        "{stderr:?}"
    );
}

#[test]
fn bad_output_flags_are_exit_2_naming_the_flag() {
    let dir = temp_dir("outputs-bad");
    let reg = dir.join("registry.yaml");
    std::fs::write(&reg, "nhis: []\n").unwrap_or_else(|e| panic!("{e}"));
    let reg = reg.to_str().unwrap_or_default();
    let json = dir.join("e.jsonl");
    let json = json.to_str().unwrap_or_default();
    for (args, flag) in [
        (
            vec!["--json", json, "--json-max-size", "12Q"],
            "--json-max-size",
        ),
        (
            vec!["--json", json, "--json-max-size", "0"],
            "--json-max-size",
        ),
        (
            vec!["--json", json, "--json-max-size", "1M", "--json-keep", "0"],
            "--json-keep",
        ),
        (vec!["--json", json, "--json-keep", "3"], "--json-max-size"),
        (vec!["--json-max-size", "1M"], "--json"),
        (
            vec!["--json", "-", "--json-max-size", "1M"],
            "--json-max-size",
        ),
        (vec!["--log-format", "xml"], "--log-format"),
    ] {
        let out = Command::new(nhiscope_bin())
            .args(["daemon", "--registry", reg])
            .args(&args)
            .env_remove("NHISCOPE_CLICKHOUSE_URL")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {flag} not named: {err}");
    }
    // With --log-format json, the error a command stops with is a JSON line too.
    let out = Command::new(nhiscope_bin())
        .args(["--log-format", "json", "daemon", "--registry"])
        .arg(dir.join("missing.yaml"))
        .env_remove("NHISCOPE_CLICKHOUSE_URL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(v["level"], "ERROR", "{err}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing.yaml"),
        "{err}"
    );
}
