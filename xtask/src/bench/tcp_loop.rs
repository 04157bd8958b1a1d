//! `cargo xtask tcp-loop` (hidden): the loopback TCP workloads of the bench, in a process of
//! their own (so that they can be made holders of an NHI by reading its credential first, and
//! so that the bench's own threads do not share their CPU). Prints what it measured as JSON.
//!
//! - `stream`: one connection, the client writes 64 KiB buffers for `--secs`: bytes per second.
//! - `pingpong`: one connection with `TCP_NODELAY`, 64-byte requests each answered by 64 bytes,
//!   for `--secs`: round trips per second, where a per-packet cost shows most.
//! - `connects`: `--count` connections, each sending 64 bytes, reading the answer and closing:
//!   connections per second (a holder's connection is marked at its connect and its first
//!   bytes copied once).
//!
//! The server is a thread of the same process, on 127.0.0.1, so both ends' packets are this
//! process's; `--read` opens and reads a file first (a registered credential makes the process
//! a holder).

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Stream,
    Pingpong,
    Connects,
}

#[derive(Args, Debug)]
pub struct Options {
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Seconds of `stream` and `pingpong`.
    #[arg(long, default_value_t = 2.0)]
    pub secs: f64,
    /// Connections of `connects`.
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    /// Open and read this file first (a credential: the process becomes a holder).
    #[arg(long)]
    pub read: Option<PathBuf>,
    /// Pin to this CPU first.
    #[arg(long)]
    pub cpu: Option<usize>,
}

const MSG: usize = 64;

pub fn run(opts: &Options) -> Result<()> {
    if let Some(cpu) = opts.cpu {
        sys::pin_to_cpu(cpu)?;
    }
    if let Some(path) = &opts.read {
        std::fs::read(path).with_context(|| format!("tcp-loop: cannot read {}", path.display()))?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("tcp-loop: cannot listen")?;
    let addr = listener.local_addr()?;
    let mode = opts.mode;
    let server = std::thread::spawn(move || serve(&listener, mode));
    let secs = Duration::from_secs_f64(opts.secs);
    let (ops, bytes, elapsed) = match mode {
        Mode::Stream => {
            let mut s = TcpStream::connect(addr)?;
            let buf = vec![0x5au8; 64 * 1024];
            let started = Instant::now();
            let mut bytes = 0u64;
            while started.elapsed() < secs {
                s.write_all(&buf)?;
                bytes += buf.len() as u64;
            }
            drop(s);
            (bytes / buf.len() as u64, bytes, started.elapsed())
        }
        Mode::Pingpong => {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            let mut buf = [0u8; MSG];
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < secs {
                s.write_all(&buf)?;
                s.read_exact(&mut buf)?;
                n += 1;
            }
            drop(s);
            (n, n * MSG as u64 * 2, started.elapsed())
        }
        Mode::Connects => {
            let mut buf = [0u8; MSG];
            let started = Instant::now();
            for _ in 0..opts.count {
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.write_all(&buf)?;
                s.read_exact(&mut buf)?;
            }
            (opts.count, opts.count * MSG as u64 * 2, started.elapsed())
        }
    };
    // The server ends when the client has hung up (stream, pingpong) or after the last
    // connection (connects); a stuck one is not waited for.
    if mode != Mode::Connects {
        match server.join() {
            Ok(r) => r?,
            Err(_) => bail!("tcp-loop: the server thread panicked"),
        }
    }
    println!(
        "{}",
        json!({
            "mode": format!("{mode:?}").to_lowercase(),
            "ops": ops,
            "bytes": bytes,
            "elapsed_ns": elapsed.as_nanos() as u64,
        })
    );
    Ok(())
}

/// The other end: reads everything (stream), or answers each message (pingpong, connects).
fn serve(listener: &TcpListener, mode: Mode) -> Result<()> {
    loop {
        let (mut s, _) = listener.accept()?;
        match mode {
            Mode::Stream => {
                let mut buf = vec![0u8; 256 * 1024];
                while s.read(&mut buf)? != 0 {}
                return Ok(());
            }
            Mode::Pingpong => {
                s.set_nodelay(true)?;
                let mut buf = [0u8; MSG];
                while s.read_exact(&mut buf).is_ok() {
                    s.write_all(&buf)?;
                }
                return Ok(());
            }
            Mode::Connects => {
                s.set_nodelay(true)?;
                let mut buf = [0u8; MSG];
                s.read_exact(&mut buf)?;
                s.write_all(&buf)?;
            }
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed_s
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed_s
    }
}

/// Runs the workload in a child process (this xtask binary, `tcp-loop`) and waits for it.
pub fn spawn(
    mode: Mode,
    secs: f64,
    count: u64,
    read: Option<&std::path::Path>,
    cpu: Option<usize>,
) -> Result<Outcome> {
    sys::check_interrupted()?;
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("tcp-loop")
        .arg("--mode")
        .arg(format!("{mode:?}").to_lowercase())
        .arg("--secs")
        .arg(secs.to_string())
        .arg("--count")
        .arg(count.to_string());
    if let Some(p) = read {
        cmd.arg("--read").arg(p);
    }
    if let Some(cpu) = cpu {
        cmd.arg("--cpu").arg(cpu.to_string());
    }
    let out = cmd.output().context("cannot run the TCP loop")?;
    if !out.status.success() {
        bail!(
            "the TCP loop ({mode:?}) failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the TCP loop printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let num = |k: &str| {
        v[k].as_u64()
            .with_context(|| format!("the TCP loop gave no {k}"))
    };
    Ok(Outcome {
        ops: num("ops")?,
        bytes: num("bytes")?,
        elapsed_s: num("elapsed_ns")? as f64 / 1e9,
    })
}
