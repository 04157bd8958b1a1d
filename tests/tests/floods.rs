//! Floods cost the flooder, not the monitor: a thread storm costs no kernel record, and failed
//! opens of a watched name are limited per user and name, every one beyond the limit counted,
//! and a flood of DNS packets fills only its own ring.
//! (RSS and CPU under floods are measured by `cargo xtask bench`.)
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{process::Command, time::Duration};

use nhiscope_tests::{
    procs::{run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::Value;

fn registry(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("dir");
    let cred = dir.join("token");
    std::fs::write(&cred, "x").expect("credential");
    let yaml = format!(
        "nhis:\n  - id: app\n    credentials: [{}]\n",
        cred.display()
    );
    (dir, yaml)
}

/// The `records` count of the daemon's `stopping:` line.
fn records_handled(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("stopping:"))
        .unwrap_or_else(|| panic!("no stopping line in:\n{log}"));
    let after = line.split("stopping:").nth(1).expect("text");
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {line}"))
}

#[test]
fn a_thread_storm_costs_no_records() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, yaml) = registry("threads");
    let d = Daemon::start(&yaml);
    const THREADS: usize = 3000;
    let code = format!(
        "import threading\n\
         for _ in range({THREADS}):\n    t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
    );
    run(Command::new(PYTHON).arg("-c").arg(&code));
    std::thread::sleep(Duration::from_millis(300));
    let (status, output) = d.stop_with_output();
    assert_eq!(status.code(), Some(0));
    let records = records_handled(&output.join("\n"));
    // The python process itself (fork, exec, exit) and whatever else the host did: far fewer
    // than one record per thread.
    assert!(
        records < (THREADS as u64) / 4,
        "{records} records for {THREADS} threads"
    );
}

#[test]
fn failed_opens_of_a_watched_name_are_limited_and_the_rest_counted() {
    if !require_root_bpf() {
        return;
    }
    let (dir, yaml) = registry("failed-flood");
    let d = Daemon::start(&yaml);
    let path = d.events_path().to_path_buf();
    // The registered name in a directory where it does not exist: every open fails.
    let missing = dir.join("nowhere/token");
    const N: u64 = 5000;
    let code = format!(
        "import os\n\
         for _ in range({N}):\n    try: os.open('{}', os.O_RDONLY)\n    except OSError: pass\n",
        missing.display()
    );
    let pid = run(Command::new(PYTHON).arg("-c").arg(&code));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.stop().code(), Some(0));
    let events: Vec<Value> = std::fs::read_to_string(&path)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    // Every failed open beyond the limit is a counted loss; the few let through are judged by
    // the daemon (not the registered file: no event).
    let limited: u64 = events
        .iter()
        .filter(|e| e["kind"] == "loss" && e["cause"] == "failed_open_rate_limited")
        .map(|e| e["count"].as_u64().expect("count"))
        .sum();
    assert!(
        limited > 0,
        "nothing was limited: {N} failed opens all went through"
    );
    // At most 20 a second got through: the run took at most a few seconds.
    assert!(
        limited >= N - 200,
        "{limited} of {N} limited: too many went through"
    );
    assert!(
        events
            .iter()
            .all(|e| e["pid"] != pid || e["kind"] != "open"),
        "a failed open of another file was reported as the credential"
    );
}

/// A flood of DNS packets (anyone can send them) fills only the DNS packets' own ring: its
/// overflow is counted as `ringbuf_full_dns`, and the credential reads made in the middle of it
/// all arrive, with no other record lost.
#[test]
fn a_dns_flood_costs_only_its_own_ring() {
    if !require_root_bpf() {
        return;
    }
    let (dir, yaml) = registry("dnsflood");
    let d = Daemon::start(&yaml);
    let cred = dir.join("token");
    const READS: usize = 50;
    let code = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         q = b'\\x12\\x34\\x01\\x00\\x00\\x01' + bytes(6) + b'\\x01a\\x04test\\x00\\x00\\x01\\x00\\x01'\n\
         for i in range(40000):\n    \
             s.sendto(q, ('127.0.0.1', 53))\n    \
             if i % 800 == 0: open('{}').read()\n",
        cred.display()
    );
    let pid = run(Command::new(PYTHON).arg("-c").arg(&code));
    let loss = d.wait_for(Duration::from_secs(10), |e| {
        e["kind"] == "loss" && e["cause"] == "ringbuf_full_dns"
    });
    assert!(loss["count"].as_u64().is_some_and(|n| n > 0), "{loss}");
    let path = cred.to_string_lossy().into_owned();
    let reads = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["kind"] == "open" && e["pid"] == pid && e["path"] == path.as_str())
            .count()
    };
    let started = std::time::Instant::now();
    while reads(&d.events()) < READS && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = d.events();
    assert_eq!(
        reads(&events),
        READS,
        "credential reads lost in the DNS flood"
    );
    let other: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "loss" && e["cause"] != "ringbuf_full_dns")
        .collect();
    assert!(other.is_empty(), "other records lost: {other:?}");
}
