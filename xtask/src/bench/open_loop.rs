//! `cargo xtask open-loop` (hidden): the workload of the kernel benchmarks. Opens and closes one
//! path N times with libc's `open` (the `openat` syscall) and prints what it took as JSON, so that
//! the process doing the opens is separate from the bench (and from its `/proc` reading).

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::sys;

#[derive(Args, Debug)]
pub struct Options {
    /// The path to open.
    #[arg(long)]
    pub path: PathBuf,
    /// How many open+close pairs.
    #[arg(long)]
    pub count: u64,
    /// Pin to this CPU first.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// At most this many opens per second (0: as fast as it goes).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

pub fn run(opts: &Options) -> Result<()> {
    if let Some(cpu) = opts.cpu {
        sys::pin_to_cpu(cpu)?;
    }
    let path = CString::new(opts.path.as_os_str().as_bytes())
        .context("open-loop: the path has a NUL byte")?;
    let mut failures = 0u64;
    let started = std::time::Instant::now();
    for i in 0..opts.count {
        // Paced in steps of 1000 opens: ahead of the rate, sleep until it is due.
        if opts.rate > 0 && i % 1000 == 0 {
            let due = std::time::Duration::from_secs_f64(i as f64 / opts.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened by us and is closed once.
            unsafe { libc::close(fd) };
        } else {
            failures += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "count": opts.count,
            "failures": failures,
            "elapsed_ns": elapsed.as_nanos() as u64,
            "cpu_ns": cpu_ns(),
        })
    );
    Ok(())
}

/// CPU time (user + system) this process has used, in ns.
fn cpu_ns() -> u64 {
    // SAFETY: rusage is plain data; getrusage writes into the one we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What one loop took.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub count: u64,
    pub elapsed_s: f64,
    /// CPU time of the looping process (user + system): unlike wall time, it does not count
    /// the time spent waiting for a CPU that other work on the machine holds.
    pub cpu_s: f64,
}

impl Outcome {
    pub fn ns_per_open(&self) -> f64 {
        self.elapsed_s * 1e9 / self.count as f64
    }

    pub fn cpu_ns_per_open(&self) -> f64 {
        self.cpu_s * 1e9 / self.count as f64
    }
}

/// Runs the loop in a child process (this xtask binary, `open-loop`) and waits for it.
pub fn spawn(path: &std::path::Path, count: u64, cpu: Option<usize>) -> Result<Outcome> {
    spawn_paced(path, count, cpu, 0)
}

/// The same at most `rate` opens per second (0: unpaced).
pub fn spawn_paced(
    path: &std::path::Path,
    count: u64,
    cpu: Option<usize>,
    rate: u64,
) -> Result<Outcome> {
    sys::check_interrupted()?;
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("open-loop")
        .arg("--path")
        .arg(path)
        .arg("--count")
        .arg(count.to_string())
        .arg("--rate")
        .arg(rate.to_string());
    if let Some(cpu) = cpu {
        cmd.arg("--cpu").arg(cpu.to_string());
    }
    let out = cmd.output().context("cannot run the open loop")?;
    if !out.status.success() {
        bail!(
            "the open loop on {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the open loop printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let failures = v["failures"].as_u64().unwrap_or(0);
    if failures > 0 {
        bail!(
            "the open loop could not open {} ({failures} of {count} opens failed)",
            path.display()
        );
    }
    let ns = v["elapsed_ns"]
        .as_u64()
        .context("the open loop printed no elapsed_ns")?;
    Ok(Outcome {
        count,
        elapsed_s: ns as f64 / 1e9,
        cpu_s: v["cpu_ns"].as_u64().unwrap_or(0) as f64 / 1e9,
    })
}
