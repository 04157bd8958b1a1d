//! Floods against the daemon, as a hostile local user would make them: a fork bomb, a thread
//! storm, failed opens of a watched name, and DNS packets nobody asked for. Each runs for a few
//! seconds against a fresh daemon; what is measured is what the flood costs the monitor (its
//! peak RSS and CPU) and that what it dropped was counted (the kernel's loss counters).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::{
    bpftool,
    sys::{self, Managed},
};

/// One flood: a name and the command that makes it for `secs` seconds.
struct Flood {
    name: &'static str,
    what: &'static str,
    command: fn(secs: u64, watched: &Path) -> Command,
}

const FLOODS: &[Flood] = &[
    Flood {
        name: "fork_bomb",
        what: "fork bomb (stress-ng --fork 2)",
        command: |secs, _| {
            let mut c = Command::new("stress-ng");
            c.args(["--fork", "2", "--quiet", "--timeout"])
                .arg(format!("{secs}s"));
            c
        },
    },
    Flood {
        name: "thread_storm",
        what: "thread storm (stress-ng --pthread 2)",
        command: |secs, _| {
            let mut c = Command::new("stress-ng");
            c.args(["--pthread", "2", "--quiet", "--timeout"])
                .arg(format!("{secs}s"));
            c
        },
    },
    Flood {
        name: "failed_opens",
        what: "failed opens of a watched name",
        command: |secs, watched| {
            // The watched file's name in a directory where it does not exist.
            let name = watched
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let code = format!(
                "import os, time\nend = time.time() + {secs}\nwhile time.time() < end:\n    \
                 for _ in range(1000):\n        try: os.open('/nonexistent-dir/{name}', 0)\n        \
                 except OSError: pass\n"
            );
            let mut c = Command::new("python3");
            c.arg("-c").arg(code);
            c
        },
    },
    Flood {
        name: "dns_packets",
        what: "DNS answers nobody asked for",
        command: |secs, _| {
            // From port 53 on loopback to ports nobody queried from: each looks like an answer.
            let code = format!(
                "import socket, time, random\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('127.0.0.1', 53))\n\
                 pkt = bytes.fromhex('1234818000010001000000000161000001000101c00c000100010000003c00040a000001')\n\
                 end = time.time() + {secs}\n\
                 while time.time() < end:\n    \
                 for _ in range(500): s.sendto(pkt, ('127.0.0.1', random.randint(20000, 60000)))\n"
            );
            let mut c = Command::new("python3");
            c.arg("-c").arg(code);
            c
        },
    },
];

/// Run every flood against the daemon `start` makes (one daemon for all, after a pause each),
/// `secs` seconds each. Returns one JSON object per flood.
pub fn run(
    start: &dyn Fn() -> Result<Managed>,
    watched: &Path,
    secs: u64,
) -> Result<Vec<(&'static str, &'static str, Value)>> {
    let mut daemon = start()?;
    let pid = daemon.pid();
    let mut out = Vec::new();
    for f in FLOODS {
        sys::check_interrupted()?;
        let lost_before = bpftool::losses(pid).unwrap_or(0);
        let cpu_before = sys::cpu_seconds(pid)?;
        let mut cmd = (f.command)(secs, watched);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = Managed::spawn(f.name, cmd, libc::SIGTERM)
            .with_context(|| format!("bench: cannot start the {} flood", f.what))?;
        let started = Instant::now();
        let mut peak_rss = sys::rss_bytes(pid)?;
        while child.exited().is_none() && started.elapsed() < Duration::from_secs(secs + 10) {
            peak_rss = peak_rss.max(sys::rss_bytes(pid)?);
            sys::sleep(Duration::from_millis(100))?;
        }
        let _ = child.stop(Duration::from_secs(5));
        let elapsed = started.elapsed().as_secs_f64();
        // Let the daemon catch up, then read what it cost and what was counted.
        sys::sleep(Duration::from_secs(2))?;
        peak_rss = peak_rss.max(sys::rss_bytes(pid)?);
        let cpu = sys::cpu_seconds(pid)? - cpu_before;
        let lost = bpftool::losses(pid)
            .unwrap_or(0)
            .saturating_sub(lost_before);
        let alive = daemon.exited().is_none();
        eprintln!(
            "bench:   {}: {elapsed:.1} s, daemon peak RSS {:.1} MB, CPU {:.2} s ({:.0}% of a core), \
             {lost} kernel records counted lost{}",
            f.what,
            peak_rss as f64 / (1024.0 * 1024.0),
            cpu,
            100.0 * cpu / elapsed.max(0.001),
            if alive { "" } else { ", DAEMON EXITED" }
        );
        out.push((
            f.name,
            f.what,
            json!({"secs": elapsed, "peak_rss_mb": peak_rss as f64 / (1024.0 * 1024.0),
                   "cpu_s": cpu, "cpu_pct": 100.0 * cpu / elapsed.max(0.001),
                   "lost_counted": lost, "daemon_alive": alive}),
        ));
        if !alive {
            break;
        }
    }
    let _ = daemon.stop(Duration::from_secs(20));
    Ok(out)
}
