//! `cargo xtask bench`: nhiscope's performance targets, measured in one run, as ratios against
//! baselines taken on the same machine in the same run.
//!
//! 1. Kernel cost per `openat` of an unwatched path: `run_time_ns / run_cnt` of the daemon's
//!    `sys_enter_openat` and `sys_exit_openat` programs (`kernel.bpf_stats_enabled`), against a
//!    bpftrace one-liner doing one prefix compare, on the same open+close loop; also per watched
//!    open.
//! 2. Wall time of that loop without probes and with the daemon attached (stats off).
//! 3. The userspace pipeline (decode, engine, JSON) on one core: `monitor-user`'s example
//!    `pipeline_bench`.
//! 4. The daemon at rest: RSS, and CPU while a process opens a credential 100 times a second.
//! 5. Loopback TCP (a stream, a 64-byte ping-pong, short connections) without probes and with
//!    the daemon attached, and short connections by a holder (a process that read a registered
//!    credential, whose connections are marked and whose first bytes are copied): an A/B of its
//!    own, in rounds that each run both sides back to back, alternating which goes first, with
//!    a daemon started and stopped around its runs (see [`tcp_ab`](mod@tcp_ab) for why and how).
//!
//! The programs of a process are found through `/proc/PID/fdinfo`: each of its BPF program fds
//! gives `prog_id`, `run_time_ns` and `run_cnt`, and each bpf_link fd the tracepoint it attaches
//! (`tp_name`), so the numbers are those of the daemon started here, whatever else is loaded.
//!
//! Everything started here (daemon, bpftrace, loops) is stopped on exit, on error and on Ctrl-C;
//! the sysctl gets its old value back and the credential files are removed.
//!
//! [`run`] reads as the list of steps: each measurement is one function returning what it
//! measured, and each part of the report one `report_*` function adding its rows, in the order
//! the table shows them. `--only STEP` (repeatable) runs the setup and the named steps alone,
//! for quick iteration on one of them; the report then holds their rows only.

mod bpftool;
mod floods;
pub mod open_loop;
mod registry;
mod report;
mod sys;
mod tcp_ab;
pub mod tcp_loop;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::{build, cmd, ebpf, setup};
use open_loop::Outcome;
use report::{Report, Target};
use sys::Managed;
use tcp_ab::{report_tcp, tcp_ab};

/// An unwatched path, short.
const UNWATCHED: &str = "/etc/hostname";
/// An unwatched path, longer (more bytes to copy and hash).
const UNWATCHED_LONG: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
/// The baseline: what a person would write to watch a credential directory with bpftrace.
const BPFTRACE_PROG: &str = r#"tracepoint:syscalls:sys_enter_openat /strncmp(str(args->filename), "/etc/nhiscope-bench/", 20) == 0/ { @c = count(); }"#;
/// A program that does nothing (a constant-false predicate, 2 instructions), on `close`: what
/// `bpf_stats` itself adds to every program's `run_time_ns` (two clock reads), measured on the
/// same loop, so that the comparison can also be made net of it.
const FLOOR_PROG: &str = r#"tracepoint:syscalls:sys_enter_close /0/ { @z = count(); }"#;

const MB: f64 = 1024.0 * 1024.0;

#[derive(Args, Debug)]
pub struct Options {
    /// Opens in each unwatched-open loop (kernel cost and wall time).
    #[arg(long, default_value_t = 2_000_000, value_name = "N")]
    pub count: u64,
    /// Opens in the watched-open loop (each one becomes an event; the default fits in the
    /// daemon's 8 MiB ring buffer, so that none is lost even if the daemon falls behind).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub watched_count: u64,
    /// Runs of each open+close wall-time loop; the median is kept.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeat: usize,
    /// Rounds of the loopback TCP A/B: each round runs every TCP workload once without probes
    /// and once with the daemon, back to back, alternating which goes first; the ratios are
    /// the medians of the rounds' paired ratios (about 10 s per round).
    #[arg(long, default_value_t = 7, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_rounds: u32,
    /// Seconds of the idle measurement (100 watched opens per second).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub idle_secs: u64,
    /// Seconds of the userspace pipeline measurement.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub pipeline_secs: u64,
    /// Rows of the ClickHouse store measurements (sink alone, store under a flood).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub store_rows: u64,
    /// Events spooled during the simulated outage (10 minutes at 1k events/s), then replayed.
    #[arg(long, default_value_t = 600_000, value_name = "N")]
    pub outage_events: u64,
    /// Matched credential opens per second of the sustained run (daemon to ClickHouse).
    #[arg(long, default_value_t = 150_000, value_name = "N")]
    pub sustained_rate: u64,
    /// Seconds of the sustained run.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub sustained_secs: u64,
    /// Seconds of each flood (fork bomb, thread storm, failed opens, DNS packets).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub flood_secs: u64,
    /// Do not build: use target/release/nhiscope and the bench examples as they are.
    #[arg(long)]
    pub no_build: bool,
    /// Run only this step (after the setup and build); repeat it for several. Without it,
    /// every step runs. results.json and results.md then hold only the rows of these steps.
    #[arg(long, value_enum, value_name = "STEP")]
    pub only: Vec<Step>,
}

/// The steps `--only` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Step {
    /// Kernel cost per openat against bpftrace, the open+close loop, the daemon at rest.
    Openat,
    /// Loopback TCP without probes and with the daemon (the A/B in rounds).
    Tcp,
    /// The userspace pipeline on one core.
    Pipeline,
    /// The ClickHouse store (sink, store under a flood, outage replay).
    Store,
    /// The daemon writing to a local ClickHouse at a sustained rate.
    Sustained,
    /// Fork bomb, thread storm, failed opens, DNS packets.
    Floods,
}

/// The command line that reproduces this run, for the report.
fn command_line(opts: &Options) -> String {
    let mut c = String::from("cargo xtask bench");
    let d = Options {
        count: 2_000_000,
        watched_count: 20_000,
        repeat: 3,
        tcp_rounds: 7,
        idle_secs: 10,
        pipeline_secs: 5,
        store_rows: 1_000_000,
        outage_events: 600_000,
        sustained_rate: 150_000,
        sustained_secs: 30,
        flood_secs: 10,
        no_build: false,
        only: Vec::new(),
    };
    if opts.count != d.count {
        c += &format!(" --count {}", opts.count);
    }
    if opts.watched_count != d.watched_count {
        c += &format!(" --watched-count {}", opts.watched_count);
    }
    if opts.repeat != d.repeat {
        c += &format!(" --repeat {}", opts.repeat);
    }
    if opts.tcp_rounds != d.tcp_rounds {
        c += &format!(" --tcp-rounds {}", opts.tcp_rounds);
    }
    if opts.idle_secs != d.idle_secs {
        c += &format!(" --idle-secs {}", opts.idle_secs);
    }
    if opts.pipeline_secs != d.pipeline_secs {
        c += &format!(" --pipeline-secs {}", opts.pipeline_secs);
    }
    if opts.store_rows != d.store_rows {
        c += &format!(" --store-rows {}", opts.store_rows);
    }
    if opts.outage_events != d.outage_events {
        c += &format!(" --outage-events {}", opts.outage_events);
    }
    if opts.sustained_rate != d.sustained_rate {
        c += &format!(" --sustained-rate {}", opts.sustained_rate);
    }
    if opts.sustained_secs != d.sustained_secs {
        c += &format!(" --sustained-secs {}", opts.sustained_secs);
    }
    if opts.flood_secs != d.flood_secs {
        c += &format!(" --flood-secs {}", opts.flood_secs);
    }
    if opts.no_build {
        c += " --no-build";
    }
    for s in &opts.only {
        if let Some(v) = s.to_possible_value() {
            c += &format!(" --only {}", v.get_name());
        }
    }
    c
}

/// Whether `s` runs: every step does without `--only`.
fn wants(opts: &Options, s: Step) -> bool {
    opts.only.is_empty() || opts.only.contains(&s)
}

/// Announces step `n` when it runs; false when `--only` leaves it out.
fn step(opts: &Options, n: usize, s: Step, what: &str) -> bool {
    let on = wants(opts, s);
    if on {
        eprintln!("bench: [{n}/11] {what}");
    }
    on
}

/// Steps 2 to 6: what the openat measurements give the report.
struct OpenatRuns {
    base: Vec<Outcome>,
    idle: IdleRun,
    with_daemon: Vec<Outcome>,
    ours: DaemonKernelCost,
    bpftrace: BpftraceRun,
}

/// What every measurement shares: the options, the release binaries, the bench's registry, the
/// directory of its files and the CPU its loops run on.
struct Bench<'a> {
    opts: &'a Options,
    daemon_bin: PathBuf,
    pipeline_bin: PathBuf,
    reg: &'a registry::BenchRegistry,
    out_dir: PathBuf,
    /// The loops run on the last CPU, the daemon and the bench wherever the scheduler puts them.
    cpu: Option<usize>,
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    check_can_run(opts)?;
    sys::catch_interrupts();
    let out_dir = cmd::target_dir().join("bench");
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("bench: cannot create {}", out_dir.display()))?;

    eprintln!("bench: [1/11] setup and build (release)");
    let (daemon_bin, pipeline_bin) = build_all(opts)?;
    require_tools()?;
    let mut rep = Report::default();
    let command = command_line(opts);
    machine_details(&mut rep);
    let reg = registry::create(&out_dir)?;
    eprintln!(
        "bench: registry {} ({} NHIs, credentials under {})",
        reg.path.display(),
        registry::NHIS,
        registry::CRED_ROOT
    );
    let stats = sys::BpfStats::enable()?;
    let cpu = (sys::cpus() >= 2).then(|| sys::cpus() - 1);
    rep.detail("loop_cpu", json!(cpu));
    note_foreign_programs(&mut rep)?;
    let b = Bench {
        opts,
        daemon_bin,
        pipeline_bin,
        reg: &reg,
        out_dir,
        cpu,
    };

    let mut openat = None;
    if step(
        opts,
        2,
        Step::Openat,
        &format!(
            "open+close loop without probes ({} x {} opens of {UNWATCHED})",
            opts.repeat, opts.count
        ),
    ) {
        let base = loop_without_probes(&b, &stats)?;

        step(opts, 3, Step::Openat, "daemon: start, idle cost");
        let mut daemon = MeasuredDaemon::start(&b, &stats, &mut rep)?;
        let idle = daemon_idle(&b, &daemon, &mut rep)?;

        step(
            opts,
            4,
            Step::Openat,
            &format!(
                "open+close loop with the daemon attached ({} x {} opens)",
                opts.repeat, opts.count
            ),
        );
        stats.set(false)?;
        let with_daemon = wall_runs("with the daemon", UNWATCHED, opts, cpu)?;

        step(
            opts,
            5,
            Step::Openat,
            "kernel cost per open: the daemon's programs (bpf_stats)",
        );
        let ours = daemon_kernel_cost(&b, &daemon, &stats)?;
        daemon.stop(&mut rep)?;
        drop(daemon);

        step(
            opts,
            6,
            Step::Openat,
            "the bpftrace one-liner: kernel cost per open (bpf_stats), then wall time",
        );
        let bpftrace = bpftrace_baseline(&b, &stats, &mut rep)?;
        openat = Some(OpenatRuns {
            base,
            idle,
            with_daemon,
            ours,
            bpftrace,
        });
    }

    let tcp = step(
        opts,
        7,
        Step::Tcp,
        &format!(
            "loopback TCP, {} rounds of A/B: without probes and with the daemon, back to back",
            opts.tcp_rounds
        ),
    )
    .then(|| tcp_ab(&b, &stats, &mut rep))
    .transpose()?;
    drop(stats);

    let pipeline = step(
        opts,
        8,
        Step::Pipeline,
        &format!("userspace pipeline on one core ({} s)", opts.pipeline_secs),
    )
    .then(|| run_pipeline(&b.pipeline_bin, &reg, opts.pipeline_secs, cpu));

    let store = step(
        opts,
        9,
        Step::Store,
        &format!(
            "ClickHouse store: {} rows through the sink and the store, a {}-event outage replayed",
            opts.store_rows, opts.outage_events
        ),
    )
    .then(|| run_store(opts));

    let sustained = step(
        opts,
        10,
        Step::Sustained,
        &format!(
            "sustained: {} matched opens/s for {} s, the daemon writing to a local ClickHouse",
            opts.sustained_rate, opts.sustained_secs
        ),
    )
    .then(|| run_sustained(opts, &b.daemon_bin, &reg, &b.out_dir));

    let floods = step(
        opts,
        11,
        Step::Floods,
        &format!(
            "floods: fork bomb, thread storm, failed opens, DNS packets ({} s each)",
            opts.flood_secs
        ),
    )
    .then(|| run_floods(&b));

    if let Some(o) = &openat {
        report_kernel(&mut rep, &b, &o.ours, &o.bpftrace);
        report_loops(
            &mut rep,
            opts,
            &o.base,
            &o.with_daemon,
            &o.bpftrace.with_bpftrace,
        );
    }
    if let Some(t) = &tcp {
        report_tcp(&mut rep, t);
    }
    if let Some(p) = &pipeline {
        report_pipeline(&mut rep, p);
    }
    if let Some(s) = &store {
        report_store(&mut rep, opts, s);
    }
    if let Some(f) = &floods {
        report_floods(&mut rep, f);
    }
    if let Some(s) = &sustained {
        report_sustained(&mut rep, opts, s);
    }
    if let Some(o) = &openat {
        report_idle(&mut rep, opts, &o.idle);
        closing_notes(&mut rep, o.ours.lost);
    }
    rep.detail("elapsed_s", json!(started.elapsed().as_secs_f64()));

    rep.write(&b.out_dir, &command)?;
    print_report(&rep);
    eprintln!(
        "bench: done in {:.0} s; results in {} and {}",
        started.elapsed().as_secs_f64(),
        b.out_dir.join("results.json").display(),
        b.out_dir.join("results.md").display()
    );
    if matches!(pipeline, Some(Err(_))) {
        bail!("bench: the pipeline benchmark could not be measured");
    }
    Ok(())
}

/// Refuses options that measure nothing, and a user who cannot load programs.
fn check_can_run(opts: &Options) -> Result<()> {
    if opts.count == 0 || opts.watched_count == 0 || opts.repeat == 0 {
        bail!("bench: --count, --watched-count and --repeat must be at least 1");
    }
    if !cmd::is_root() {
        bail!(
            "bench: needs root (it loads eBPF programs, runs bpftrace and sets \
             kernel.bpf_stats_enabled): run it as root"
        );
    }
    Ok(())
}

/// bpftool and bpftrace, which `cargo xtask setup` installs.
fn require_tools() -> Result<()> {
    for tool in ["bpftool", "bpftrace"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("bench: `{tool}` is not installed: run `cargo xtask setup`");
        }
    }
    Ok(())
}

/// The machine's load and CPUs, and a note when other work makes the wall times noisy.
fn machine_details(rep: &mut Report) {
    rep.detail("load_average_at_start", json!(sys::loadavg()));
    rep.detail("cpus", json!(sys::cpus()));
    if let Some(l) = sys::loadavg() {
        if l > 0.5 {
            rep.note(format!(
                "load average {l:.2} at start: other work on this machine makes the wall-time \
                 ratio noisy"
            ));
        }
    }
}

/// A note naming the openat programs others have loaded: they slow every loop.
fn note_foreign_programs(rep: &mut Report) -> Result<()> {
    let foreign = bpftool::foreign_openat_progs(&bpftool::progs()?, &BTreeSet::new());
    if !foreign.is_empty() {
        rep.note(format!(
            "other openat programs are loaded on this machine and slow every loop: {}",
            foreign.join(", ")
        ));
    }
    Ok(())
}

/// Step 2: the open+close loop with no probe of ours (stats off), after warming the dentry
/// cache.
fn loop_without_probes(b: &Bench, stats: &sys::BpfStats) -> Result<Vec<Outcome>> {
    stats.set(false)?;
    open_loop::spawn(Path::new(UNWATCHED), b.opts.count / 10, b.cpu)?;
    wall_runs("without probes", UNWATCHED, b.opts, b.cpu)
}

/// The daemon that steps 3 to 5 measure, started on the bench's registry.
struct MeasuredDaemon {
    managed: Managed,
    pid: u32,
    /// Its program on `sys_exit_openat`: one program per open, at the syscall's exit, on the
    /// file the kernel opened.
    exit_id: u32,
    log: PathBuf,
}

impl MeasuredDaemon {
    /// Starts the daemon (stats on), waits until its openat program runs, and records its
    /// programs in the details.
    fn start(b: &Bench, stats: &sys::BpfStats, rep: &mut Report) -> Result<Self> {
        stats.set(true)?;
        let log = b.out_dir.join("daemon.log");
        let mut managed = start_daemon(&b.daemon_bin, &b.reg.path, &log)?;
        let pid = managed.pid();
        let ready = wait_for_ready(&mut managed, &log, Duration::from_secs(90))?;
        rep.detail("daemon_ready_line", json!(ready));
        let progs = sys::progs_of(pid)?;
        let exit_id = progs
            .values()
            .find(|p| p.attached_to("sys_exit_openat"))
            .map(|p| p.id)
            .with_context(|| {
                format!(
                    "bench: the daemon (pid {pid}) holds no program attached to \
                     syscalls:sys_exit_openat"
                )
            })?;
        wait_attached(&mut managed, exit_id, &b.reg.watched)?;
        let all = bpftool::progs()?;
        let ours: BTreeSet<u32> = progs.keys().copied().collect();
        let foreign = bpftool::foreign_openat_progs(&all, &ours);
        rep.detail("foreign_openat_programs", json!(foreign));
        rep.detail("daemon_programs", json!(progs.len()));
        let (xl, jit) = bpftool::sizes(&all, exit_id);
        rep.detail(
            "ours_sys_exit_openat_program",
            json!({"id": exit_id, "bytes_xlated": xl, "bytes_jited": jit,
                   "verified_insns": progs.get(&exit_id).and_then(|p| p.verified_insns)}),
        );
        Ok(Self {
            managed,
            pid,
            exit_id,
            log,
        })
    }

    /// Stops the daemon (SIGTERM) and records how it stopped.
    fn stop(&mut self, rep: &mut Report) -> Result<()> {
        let status = self.managed.stop(Duration::from_secs(20))?;
        let log_text = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(line) = log_text.lines().find(|l| l.contains("stopping:")) {
            rep.detail("daemon_stopping_line", json!(line.trim()));
        }
        if !status.success() {
            rep.note(format!(
                "the daemon exited with {status} on SIGTERM (see {})",
                self.log.display()
            ));
        }
        Ok(())
    }
}

/// Step 3's measurement: the daemon at rest.
struct IdleRun {
    /// MB, just after start.
    rss_start: f64,
    rest: Idle,
    /// The daemon's largest resident mappings (name, KiB).
    mappings: Vec<(String, u64)>,
}

/// Step 3: the daemon's RSS after start, then its CPU and RSS while a credential is opened 100
/// times a second.
fn daemon_idle(b: &Bench, d: &MeasuredDaemon, rep: &mut Report) -> Result<IdleRun> {
    let rss_start = sys::rss_bytes(d.pid)? as f64 / MB;
    eprintln!("bench: daemon pid {} ready, RSS {rss_start:.1} MB", d.pid);
    let rest = idle(d.pid, &b.reg.watched, b.opts.idle_secs)?;
    let mappings = sys::top_mappings(d.pid, 6);
    rep.detail(
        "daemon_rss_top_mappings_kib",
        json!(mappings
            .iter()
            .map(|(m, kb)| json!({"mapping": m, "kib": kb}))
            .collect::<Vec<_>>()),
    );
    rep.detail(
        "daemon_idle_cpu_pct_by_thread",
        json!(rest
            .threads
            .iter()
            .map(|(t, p)| json!({"thread": t, "pct": p}))
            .collect::<Vec<_>>()),
    );
    Ok(IdleRun {
        rss_start,
        rest,
        mappings,
    })
}

/// Step 5's measurement: what the daemon's openat program costs per open (ns, one entry per
/// program measured).
struct DaemonKernelCost {
    short: Vec<f64>,
    long: Vec<f64>,
    watched: Vec<f64>,
    /// Seconds of the daemon's CPU for the watched loop's events.
    cpu_watched: f64,
    /// Records of the watched loop lost in the kernel, when the counters could be read.
    lost: Option<u64>,
}

/// Step 5: the daemon's program cost (stats on) on unwatched short and long paths and on a
/// watched one, and the daemon's CPU for the watched opens.
fn daemon_kernel_cost(
    b: &Bench,
    d: &MeasuredDaemon,
    stats: &sys::BpfStats,
) -> Result<DaemonKernelCost> {
    let (opts, cpu, dpid) = (b.opts, b.cpu, d.pid);
    stats.set(true)?;
    let hooks = [d.exit_id];
    let short = kernel_cost(dpid, &hooks, Path::new(UNWATCHED), opts.count, cpu)?;
    let long = kernel_cost(dpid, &hooks, Path::new(UNWATCHED_LONG), opts.count, cpu)?;
    let lost_before = bpftool::losses(dpid);
    let cpu_before = sys::cpu_seconds(dpid)?;
    let watched = kernel_cost(dpid, &hooks, &b.reg.watched, opts.watched_count, cpu)?;
    wait_until_idle(dpid, Duration::from_secs(30))?;
    let cpu_watched = sys::cpu_seconds(dpid)? - cpu_before;
    let lost = match (lost_before, bpftool::losses(dpid)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(DaemonKernelCost {
        short,
        long,
        watched,
        cpu_watched,
        lost,
    })
}

/// Step 6's measurement: the bpftrace one-liner's cost per open (ns), the `bpf_stats` floor
/// and the loop with bpftrace attached.
struct BpftraceRun {
    short: f64,
    long: f64,
    /// ns per run of an empty program, when it could be read.
    floor: Option<f64>,
    with_bpftrace: Vec<Outcome>,
}

/// Step 6: the bpftrace one-liner's kernel cost (stats on) beside an empty program's (the
/// floor), then the open+close loop with it attached (stats off).
fn bpftrace_baseline(b: &Bench, stats: &sys::BpfStats, rep: &mut Report) -> Result<BpftraceRun> {
    let (opts, cpu) = (b.opts, b.cpu);
    let bt_log = b.out_dir.join("bpftrace.log");
    let floor_log = b.out_dir.join("bpftrace-floor.log");
    let mut bt = start_bpftrace(&bt_log, BPFTRACE_PROG)?;
    let mut floor = start_bpftrace(&floor_log, FLOOR_PROG)?;
    let bt_id = bpftrace_prog(&mut bt, &bt_log, &b.reg.watched, "sys_enter_open")?;
    let floor_id = bpftrace_prog(&mut floor, &floor_log, &b.reg.watched, "sys_enter_close")?;
    let all = bpftool::progs()?;
    let (xl, jit) = bpftool::sizes(&all, bt_id);
    rep.detail(
        "bpftrace_program",
        json!({"id": bt_id, "bytes_xlated": xl, "bytes_jited": jit,
               "verified_insns": sys::progs_of(bt.pid())?.get(&bt_id).and_then(|p| p.verified_insns),
               "script": BPFTRACE_PROG}),
    );
    let short = kernel_cost(bt.pid(), &[bt_id], Path::new(UNWATCHED), opts.count, cpu)?;
    let floor_before = sys::progs_of(floor.pid())?;
    let long = kernel_cost(
        bt.pid(),
        &[bt_id],
        Path::new(UNWATCHED_LONG),
        opts.count,
        cpu,
    )?;
    let floor_after = sys::progs_of(floor.pid())?;
    let stats_floor = match (floor_before.get(&floor_id), floor_after.get(&floor_id)) {
        (Some(b), Some(a)) if a.run_cnt > b.run_cnt => Some(
            a.run_time_ns.saturating_sub(b.run_time_ns) as f64 / (a.run_cnt - b.run_cnt) as f64,
        ),
        _ => None,
    };
    rep.detail(
        "bpf_stats_floor_program",
        json!({"script": FLOOR_PROG, "ns_per_run": stats_floor}),
    );
    floor.stop(Duration::from_secs(10))?;
    drop(floor);
    stats.set(false)?;
    let with_bpftrace = wall_runs("with bpftrace", UNWATCHED, opts, cpu)?;
    bt.stop(Duration::from_secs(10))?;
    drop(bt);
    Ok(BpftraceRun {
        short: short[0],
        long: long[0],
        floor: stats_floor,
        with_bpftrace,
    })
}

/// Step 10: the floods, each against a daemon of its own.
fn run_floods(b: &Bench) -> Result<Vec<(&'static str, &'static str, Value)>> {
    let flood_log = b.out_dir.join("daemon-floods.log");
    floods::run(
        &|| {
            let mut d = start_daemon(&b.daemon_bin, &b.reg.path, &flood_log)?;
            wait_for_ready(&mut d, &flood_log, Duration::from_secs(90))?;
            Ok(d)
        },
        &b.reg.watched,
        b.opts.flood_secs,
    )
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn total(c: &[f64]) -> f64 {
    c.iter().sum::<f64>()
}

/// The kernel rows: ours against the bpftrace one-liner, per unwatched and watched open.
fn report_kernel(rep: &mut Report, b: &Bench, ours: &DaemonKernelCost, bt: &BpftraceRun) {
    let kernel_ratio = Some(Target::AtMost(0.7));
    rep.add(
        "kernel.ours.total_ns",
        &format!("Kernel: ours (sys_exit_openat), unwatched {UNWATCHED}"),
        Some(total(&ours.short)),
        "ns/open",
        1,
        None,
    );
    rep.add(
        "kernel.bpftrace_ns",
        &format!("Kernel: bpftrace one-liner, {UNWATCHED}"),
        Some(bt.short),
        "ns/open",
        1,
        None,
    );
    rep.add(
        "kernel.ratio",
        &format!("Kernel cost ours/bpftrace, {UNWATCHED}"),
        ratio(total(&ours.short), bt.short),
        "x",
        2,
        kernel_ratio,
    );
    rep.add(
        "kernel.long.ours_ns",
        "Kernel: ours (sys_exit_openat), unwatched long path",
        Some(total(&ours.long)),
        "ns/open",
        1,
        None,
    );
    rep.add(
        "kernel.long.bpftrace_ns",
        "Kernel: bpftrace one-liner, long path",
        Some(bt.long),
        "ns/open",
        1,
        None,
    );
    rep.add(
        "kernel.long.ratio",
        "Kernel cost ours/bpftrace, long path",
        ratio(total(&ours.long), bt.long),
        "x",
        2,
        kernel_ratio,
    );
    if let Some(f) = bt.floor {
        rep.add(
            "kernel.stats_floor_ns",
            "Kernel: bpf_stats floor (an empty program)",
            Some(f),
            "ns/run",
            1,
            None,
        );
        rep.add(
            "kernel.net_ratio",
            &format!("Kernel cost ours/bpftrace, {UNWATCHED}, net of the floor"),
            ratio(total(&ours.short) - f, bt.short - f),
            "x",
            2,
            None,
        );
    }
    rep.add(
        "kernel.watched.total_ns",
        "Kernel: ours (sys_exit_openat), watched open",
        Some(total(&ours.watched)),
        "ns/open",
        1,
        Some(Target::AtMost(1000.0)),
    );
    rep.add(
        "daemon.cpu_per_watched_us",
        "Daemon CPU per watched open (real daemon)",
        Some(ours.cpu_watched * 1e6 / b.opts.watched_count as f64),
        "us/event",
        2,
        None,
    );
    rep.add(
        "kernel.watched.lost",
        "Watched-loop records lost in the kernel",
        ours.lost.map(|l| l as f64),
        "",
        0,
        None,
    );
    rep.detail("long_path", json!(UNWATCHED_LONG));
    rep.detail("watched_path", json!(b.reg.watched));
}

/// The wall-time rows: the open+close loop without probes, with the daemon, with bpftrace.
fn report_loops(
    rep: &mut Report,
    opts: &Options,
    base: &[Outcome],
    with_daemon: &[Outcome],
    with_bpftrace: &[Outcome],
) {
    let wall = |v: &[Outcome]| v.iter().map(Outcome::ns_per_open).collect::<Vec<_>>();
    let cpu_time = |v: &[Outcome]| v.iter().map(Outcome::cpu_ns_per_open).collect::<Vec<_>>();
    let (base_med, daemon_med) = (median(&wall(base)), median(&wall(with_daemon)));
    let (base_cpu, daemon_cpu) = (median(&cpu_time(base)), median(&cpu_time(with_daemon)));
    rep.add(
        "loop.base_ns",
        &format!("Open+close loop, no probes (median of {})", opts.repeat),
        Some(base_med),
        "ns/open",
        0,
        None,
    );
    rep.add(
        "loop.daemon_ns",
        &format!(
            "Open+close loop, daemon attached (median of {})",
            opts.repeat
        ),
        Some(daemon_med),
        "ns/open",
        0,
        None,
    );
    rep.add(
        "loop.slowdown",
        "Open+close loop slowdown (wall), daemon / no probes",
        ratio(daemon_med, base_med),
        "x",
        3,
        Some(Target::AtMost(1.05)),
    );
    rep.add(
        "loop.cpu_slowdown",
        "Open+close loop slowdown (loop's CPU time)",
        ratio(daemon_cpu, base_cpu),
        "x",
        3,
        None,
    );
    let bt_med = median(&wall(with_bpftrace));
    rep.add(
        "loop.bpftrace_slowdown",
        "Open+close loop slowdown (wall), bpftrace / no probes",
        ratio(bt_med, base_med),
        "x",
        3,
        None,
    );
    rep.detail(
        "loop_runs_ns_per_open",
        json!({"without_probes": {"wall": wall(base), "cpu": cpu_time(base)},
               "with_daemon": {"wall": wall(with_daemon), "cpu": cpu_time(with_daemon)},
               "with_bpftrace": {"wall": wall(with_bpftrace), "cpu": cpu_time(with_bpftrace)}}),
    );
    if let (Some(b), Some(d)) = (min(&wall(base)), min(&wall(with_daemon))) {
        rep.detail("loop_slowdown_of_fastest_runs", json!(d / b));
    }
}

/// The pipeline rows: throughput, and the cost of each kind of record.
fn report_pipeline(rep: &mut Report, pipeline: &Result<Value>) {
    match pipeline {
        Ok(p) => {
            let f = |k: &str| p[k].as_f64();
            rep.add(
                "pipeline.records_per_s",
                "Pipeline: records in/s (decode, engine, JSON), one core",
                f("records_per_s"),
                "records/s",
                0,
                Some(Target::AtLeast(2e6)),
            );
            rep.add(
                "pipeline.events_per_s",
                "Pipeline: JSON events out/s",
                f("events_per_s"),
                "events/s",
                0,
                None,
            );
            rep.add(
                "pipeline.json_ns_per_event",
                "Pipeline: JSON line alone, per event",
                f("json_ns_per_event"),
                "ns/event",
                0,
                Some(Target::AtMost(150.0)),
            );
            if let Some(kinds) = p["per_kind"].as_array() {
                for k in kinds {
                    let (Some(name), Some(ns)) = (k["kind"].as_str(), k["ns_per_record"].as_f64())
                    else {
                        continue;
                    };
                    rep.add(
                        &format!("pipeline.kind.{name}"),
                        &format!("Pipeline: {name}"),
                        Some(ns),
                        "ns/record",
                        0,
                        None,
                    );
                }
            }
            rep.detail("pipeline", p.clone());
        }
        Err(e) => {
            rep.add(
                "pipeline.records_per_s",
                "Pipeline: records in/s (decode, engine, JSON), one core",
                None,
                "records/s",
                0,
                Some(Target::AtLeast(2e6)),
            );
            rep.add(
                "pipeline.json_ns_per_event",
                "Pipeline: JSON line alone, per event",
                None,
                "ns/event",
                0,
                Some(Target::AtMost(150.0)),
            );
            rep.note(format!("pipeline benchmark failed: {e:#}"));
        }
    }
}

/// The ClickHouse rows: the sink alone, the store under a flood, the replay after an outage.
fn report_store(rep: &mut Report, opts: &Options, store: &Result<Value>) {
    match store {
        Ok(s) => {
            let f = |path: &[&str]| {
                let mut v = s;
                for k in path {
                    v = &v[*k];
                }
                v.as_f64()
            };
            rep.add(
                "store.sink_lz4_rows_per_s",
                "ClickHouse sink alone, lz4, into the local 18.16",
                f(&["sink_lz4", "rows_per_s"]),
                "rows/s",
                0,
                Some(Target::AtLeast(500_000.0)),
            );
            rep.add(
                "store.sink_none_rows_per_s",
                "ClickHouse sink alone, uncompressed",
                f(&["sink_none", "rows_per_s"]),
                "rows/s",
                0,
                None,
            );
            rep.add(
                "store.flood_rows_per_s",
                "Through the store (batching, spilling to the spool)",
                f(&["store", "rows_per_s"]),
                "rows/s",
                0,
                None,
            );
            rep.add(
                "store.outage_replay_s",
                &format!(
                    "Replay after an outage of {} events (10 min at 1k/s)",
                    opts.outage_events
                ),
                f(&["outage", "replay_s"]),
                "s",
                1,
                None,
            );
            if f(&["outage", "stored"]) != Some(opts.outage_events as f64) {
                rep.note(format!(
                    "outage replay stored {:?} of {} events",
                    f(&["outage", "stored"]),
                    opts.outage_events
                ));
            }
            if let (Some(ours), Some(server)) = (
                f(&["sink_lz4", "cpu_s_nhiscope"]),
                f(&["sink_lz4", "cpu_s_server"]),
            ) {
                rep.note(format!(
                    "CPU for the lz4 sink run: nhiscope {ours:.2} s, clickhouse-server \
                     {server:.2} s (the server shares the machine's two cores)"
                ));
            }
            rep.detail("store", s.clone());
        }
        Err(e) => {
            rep.add(
                "store.sink_lz4_rows_per_s",
                "ClickHouse sink alone, lz4, into the local 18.16",
                None,
                "rows/s",
                0,
                Some(Target::AtLeast(500_000.0)),
            );
            rep.note(format!("store benchmark failed: {e:#}"));
        }
    }
}

/// The flood rows: the daemon's peak RSS, CPU and counted losses under each flood.
fn report_floods(rep: &mut Report, floods: &Result<Vec<(&'static str, &'static str, Value)>>) {
    match floods {
        Ok(rows) => {
            for (name, what, v) in rows {
                let f = |k: &str| v[k].as_f64();
                rep.add(
                    &format!("flood.{name}.peak_rss_mb"),
                    &format!("Flood, {what}: daemon peak RSS"),
                    f("peak_rss_mb"),
                    "MB",
                    1,
                    Some(Target::Below(64.0)),
                );
                rep.add(
                    &format!("flood.{name}.cpu_pct"),
                    &format!("Flood, {what}: daemon CPU"),
                    f("cpu_pct"),
                    "% of a core",
                    0,
                    None,
                );
                rep.add(
                    &format!("flood.{name}.lost"),
                    &format!("Flood, {what}: kernel records counted lost"),
                    f("lost_counted"),
                    "records",
                    0,
                    None,
                );
                rep.detail(&format!("flood_{name}"), v.clone());
            }
        }
        Err(e) => rep.note(format!("flood benchmark failed: {e:#}")),
    }
}

/// The sustained rows: the rate reached, and whether every open was stored exactly once.
fn report_sustained(rep: &mut Report, opts: &Options, sustained: &Result<Value>) {
    match sustained {
        Ok(s) => {
            let f = |k: &str| s[k].as_f64();
            let sent = f("opens").unwrap_or(0.0);
            let ok = f("stored") == Some(sent)
                && f("stored_final") == Some(sent)
                && f("lost") == Some(0.0);
            rep.add(
                "sustained.rate",
                "Sustained: matched opens/s achieved by the workload",
                f("opens_per_s"),
                "opens/s",
                0,
                Some(Target::AtLeast(opts.sustained_rate as f64)),
            );
            rep.add(
                "sustained.stored_ratio",
                "Sustained: stored exactly once and no drop (1 = all)",
                Some(if ok {
                    1.0
                } else {
                    f("stored_final").unwrap_or(0.0) / sent.max(1.0)
                }),
                "",
                4,
                Some(Target::AtLeast(1.0)),
            );
            rep.add(
                "sustained.lost",
                "Sustained: counted lost",
                f("lost"),
                "events",
                0,
                None,
            );
            rep.add(
                "sustained.duplicates",
                "Sustained: rows stored twice",
                f("stored").zip(f("stored_final")).map(|(a, b)| a - b),
                "rows",
                0,
                None,
            );
            rep.detail("sustained", s.clone());
        }
        Err(e) => {
            rep.add(
                "sustained.rate",
                "Sustained: matched opens/s achieved by the workload",
                None,
                "opens/s",
                0,
                Some(Target::AtLeast(opts.sustained_rate as f64)),
            );
            rep.note(format!("sustained run failed: {e:#}"));
        }
    }
}

/// The idle rows: RSS after start and at rest, CPU at 100 watched opens a second.
fn report_idle(rep: &mut Report, opts: &Options, idle: &IdleRun) {
    let (rss_start, rest, mappings) = (idle.rss_start, &idle.rest, &idle.mappings);
    rep.add(
        "idle.rss_start_mb",
        "Daemon RSS after start",
        Some(rss_start),
        "MB",
        1,
        Some(Target::Below(30.0)),
    );
    rep.add(
        "idle.rss_mb",
        "Daemon RSS after the idle run",
        Some(rest.rss_mb),
        "MB",
        1,
        Some(Target::Below(30.0)),
    );
    let ring_mb = mappings
        .iter()
        .filter(|(m, _)| m == "anon_inode:bpf-map")
        .map(|(_, kb)| *kb as f64 / 1024.0)
        .sum::<f64>();
    rep.add(
        "idle.rss_no_ring_mb",
        "Daemon RSS without its ring-buffer mapping",
        Some(rest.rss_mb - ring_mb),
        "MB",
        1,
        None,
    );
    rep.add(
        "idle.cpu_pct",
        &format!("Daemon CPU at 100 watched opens/s ({} s)", opts.idle_secs),
        Some(rest.cpu_pct),
        "%",
        2,
        Some(Target::Below(1.0)),
    );
    if rest.rss_mb.max(rss_start) >= 30.0 {
        let top: Vec<String> = mappings
            .iter()
            .take(3)
            .map(|(m, kb)| format!("{m} {:.1} MB", *kb as f64 / 1024.0))
            .collect();
        rep.note(format!(
            "largest resident mappings of the daemon: {}",
            top.join(", ")
        ));
    }
    if rest.cpu_pct >= 1.0 {
        let top: Vec<String> = rest
            .threads
            .iter()
            .take(3)
            .map(|(t, p)| format!("{t} {p:.2}%"))
            .collect();
        rep.note(format!("daemon CPU at rest by thread: {}", top.join(", ")));
    }
}

/// The notes every report ends with.
fn closing_notes(rep: &mut Report, lost: Option<u64>) {
    if lost.is_some_and(|l| l > 0) {
        rep.note("records were lost in the watched loop: the daemon could not keep up, so part of the watched opens took the (cheaper) loss path");
    }
    rep.note(
        "bpf_stats adds two clock reads to every program run (the floor row: what an empty \
         program costs by that count): it is on only for the kernel-cost loops, off for the \
         wall-time loops",
    );
}

/// The table and the notes, on stdout.
fn print_report(rep: &Report) {
    println!("\n{}", rep.table());
    if !rep.notes.is_empty() {
        println!("Notes:");
        for n in &rep.notes {
            println!("- {n}");
        }
    }
}

/// The sustained run: the daemon writes to the local ClickHouse (database `nhiscope_bench`,
/// emptied first) while a workload opens a registered credential at `opts.sustained_rate` per
/// second for `opts.sustained_secs`; then the daemon is stopped (it flushes) and ClickHouse is
/// asked how many of those opens it holds, how many twice, and how many were counted lost.
fn run_sustained(
    opts: &Options,
    daemon_bin: &Path,
    reg: &registry::BenchRegistry,
    out_dir: &Path,
) -> Result<Value> {
    sys::check_interrupted()?;
    // Stopped again at the end of the step if the step started it: the floods, and the next
    // run's measurements, run without its background merges.
    let _server = crate::clickhouse::start_for_a_while()?;
    let db = "nhiscope_bench";
    crate::clickhouse::query(&format!("DROP DATABASE IF EXISTS {db}"))?;
    let spool = out_dir.join("sustained-spool");
    let _ = fs::remove_dir_all(&spool);
    let config = out_dir.join("sustained-clickhouse.yaml");
    fs::write(
        &config,
        format!(
            "{}database: {db}\nspool_dir: {}\n",
            crate::clickhouse::config_lines(),
            spool.display()
        ),
    )?;
    let log = out_dir.join("sustained-daemon.log");
    let log_file = fs::File::create(&log)?;
    let mut c = Command::new(daemon_bin);
    c.arg("daemon")
        .arg("--registry")
        .arg(&reg.path)
        .arg("--clickhouse-config")
        .arg(&config)
        .arg("--live-socket")
        .arg(live_socket(&log))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    let mut daemon = Managed::spawn("nhiscope daemon", c, libc::SIGTERM)?;
    wait_for_ready(&mut daemon, &log, Duration::from_secs(90))?;
    let count = opts.sustained_rate * opts.sustained_secs;
    let cpu0 = sys::cpu_seconds(daemon.pid()).unwrap_or(0.0);
    let o = open_loop::spawn_paced(&reg.watched, count, None, opts.sustained_rate)?;
    let daemon_cpu = sys::cpu_seconds(daemon.pid()).unwrap_or(0.0) - cpu0;
    eprintln!(
        "bench:   {count} opens in {:.1} s ({:.0}/s); the daemon used {daemon_cpu:.1} s of CPU",
        o.elapsed_s,
        count as f64 / o.elapsed_s
    );
    let path = reg.watched.display().to_string().replace('\'', "\\'");
    let number = |sql: String| -> Result<f64> {
        let text = crate::clickhouse::query(&sql)?;
        text.trim()
            .parse::<f64>()
            .with_context(|| format!("`{sql}` answered {text:?}"))
    };
    // The daemon catches up: until its spool is empty and the row count has stood still for
    // 3 s (at most 3 minutes); then it is stopped, and flushes what it still holds.
    let caught_up = Instant::now();
    let (mut last, mut still) = (-1.0, Instant::now());
    while caught_up.elapsed() < Duration::from_secs(180) {
        sys::sleep(Duration::from_millis(500))?;
        // The workload's own opens: other processes may open watched files meanwhile.
        let n = number(format!(
            "SELECT count() FROM {db}.events WHERE kind = 'open' AND path = '{path}'"
        ))?;
        let spooled = fs::read_dir(spool.join("batches"))
            .map(|d| d.count())
            .unwrap_or(0);
        if n != last {
            (last, still) = (n, Instant::now());
        } else if spooled == 0 && still.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let catch_up_s = caught_up.elapsed().as_secs_f64();
    let stopped = Instant::now();
    let status = daemon.stop(Duration::from_secs(120))?;
    let flush_s = stopped.elapsed().as_secs_f64();
    let stored = number(format!(
        "SELECT count() FROM {db}.events WHERE kind = 'open' AND path = '{path}'"
    ))?;
    let stored_final = number(format!(
        "SELECT count() FROM {db}.events FINAL WHERE kind = 'open' AND path = '{path}'"
    ))?;
    let lost = number(format!("SELECT sum(count) FROM {db}.losses"))?;
    eprintln!(
        "bench:   stored {stored} ({stored_final} distinct) of {count}, lost {lost}; the daemon \
         stopped ({status}) after {flush_s:.1} s"
    );
    Ok(json!({
        "opens": count,
        "opens_per_s": count as f64 / o.elapsed_s,
        "stored": stored,
        "stored_final": stored_final,
        "lost": lost,
        "daemon_cpu_s": daemon_cpu,
        "catch_up_s": catch_up_s,
        "stop_s": flush_s,
    }))
}

/// Runs the store benchmark (`tests/examples/store_bench.rs`, built by `build_all`) and returns
/// its JSON result.
fn run_store(opts: &Options) -> Result<Value> {
    let bin = cmd::target_dir()
        .join("release")
        .join("examples")
        .join("store_bench");
    sys::check_interrupted()?;
    let mut c = Command::new(&bin);
    c.args(["--rows", &opts.store_rows.to_string()])
        .args(["--outage", &opts.outage_events.to_string()]);
    json_result(c, &bin)
}

/// Runs a bench example (its progress on our stderr) and reads the JSON object it prints last.
fn json_result(mut c: Command, bin: &Path) -> Result<Value> {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", bin.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let name = bin
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let last = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{name} printed no JSON result"))?;
    serde_json::from_str(last).with_context(|| format!("{name} printed unreadable JSON"))
}

/// Builds the daemon (release, with its eBPF object) and the bench examples; returns the
/// daemon and the pipeline example.
fn build_all(opts: &Options) -> Result<(PathBuf, PathBuf)> {
    let example = cmd::target_dir()
        .join("release")
        .join("examples")
        .join("pipeline_bench");
    if opts.no_build {
        let daemon = build::binary(true);
        if !daemon.is_file() {
            bail!("bench: --no-build, but {} is missing", daemon.display());
        }
        return Ok((daemon, example));
    }
    setup::run(&setup::Options::default())?;
    let object = ebpf::build()?;
    let daemon = build::build_user(&object, true)?;
    // The same NHISCOPE_BPF_OBJ as the binary's build, so the library is not built twice.
    cmd::cargo()
        .env("NHISCOPE_BPF_OBJ", &object)
        .args([
            "build",
            "--release",
            "-p",
            "monitor-user",
            "--example",
            "pipeline_bench",
            "-p",
            "nhiscope-tests",
            "--example",
            "store_bench",
        ])
        .run()?;
    Ok((daemon, example))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().min_by(f64::total_cmp)
}

/// `opts.repeat` timed loops over `path`; ns per open+close of each.
fn wall_runs(label: &str, path: &str, opts: &Options, cpu: Option<usize>) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for i in 0..opts.repeat {
        let o: Outcome = open_loop::spawn(Path::new(path), opts.count, cpu)?;
        eprintln!(
            "bench:   {label} {}/{}: {} opens in {:.2} s, {:.0} ns per open+close ({:.0} ns of CPU)",
            i + 1,
            opts.repeat,
            o.count,
            o.elapsed_s,
            o.ns_per_open(),
            o.cpu_ns_per_open()
        );
        out.push(o);
    }
    Ok(out)
}

/// Runs the loop and returns, for each program of `ids`, ns per run over the loop.
fn kernel_cost(
    pid: u32,
    ids: &[u32],
    path: &Path,
    count: u64,
    cpu: Option<usize>,
) -> Result<Vec<f64>> {
    let before = sys::progs_of(pid)?;
    let o = open_loop::spawn(path, count, cpu)?;
    let after = sys::progs_of(pid)?;
    let mut out = Vec::new();
    let mut shown = Vec::new();
    for &id in ids {
        let (Some(b), Some(a)) = (before.get(&id), after.get(&id)) else {
            bail!("bench: program {id} of pid {pid} disappeared during the loop");
        };
        let runs = a.run_cnt.saturating_sub(b.run_cnt);
        if runs < count {
            bail!(
                "bench: program {id} ran {runs} times during {count} opens of {}: it is not \
                 attached, or kernel.bpf_stats_enabled is off",
                path.display()
            );
        }
        let ns = a.run_time_ns.saturating_sub(b.run_time_ns) as f64 / runs as f64;
        shown.push(format!("prog {id}: {ns:.1} ns x {runs} runs"));
        out.push(ns);
    }
    eprintln!(
        "bench:   {} x {count} in {:.2} s: {}",
        path.display(),
        o.elapsed_s,
        shown.join(", ")
    );
    Ok(out)
}

/// The bench's daemons' live socket, beside their logs: a daemon refuses to start while
/// another holds its socket, and the default one is any other daemon's on this machine.
fn live_socket(log: &Path) -> PathBuf {
    log.with_file_name("live.sock")
}

fn start_daemon(bin: &Path, registry: &Path, log: &Path) -> Result<Managed> {
    let log_file =
        fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let live = live_socket(log);
    let mut c = Command::new(bin);
    c.arg("daemon")
        .arg("--registry")
        .arg(registry)
        .arg("--live-socket")
        .arg(&live)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    eprintln!(
        "+ {} daemon --registry {} --live-socket {} 2>{}",
        bin.display(),
        registry.display(),
        live.display(),
        log.display()
    );
    Managed::spawn("nhiscope daemon", c, libc::SIGTERM)
}

/// The last `n` lines of a log, each cut to a readable length.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            if l.chars().count() > 300 {
                format!("{}...", l.chars().take(300).collect::<String>())
            } else {
                (*l).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_for_ready(d: &mut Managed, log: &Path, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        sys::check_interrupted()?;
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("ready")) {
            return Ok(line.trim().to_owned());
        }
        if let Some(status) = d.exited() {
            bail!(
                "bench: the daemon exited ({status}) before it was ready; the end of {}:\n{}",
                log.display(),
                tail(&text, 15)
            );
        }
        if start.elapsed() > timeout {
            bail!(
                "bench: the daemon printed no `ready` line within {timeout:?}; the end of {}:\n{}",
                log.display(),
                tail(&text, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until program `id` of `p` runs on openat (its run count grows when we open `probe`).
fn wait_attached(p: &mut Managed, id: u32, probe: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        sys::check_interrupted()?;
        if let Some(status) = p.exited() {
            bail!("bench: pid {} exited ({status}) while attaching", p.pid());
        }
        let before = sys::progs_of(p.pid())?.get(&id).map_or(0, |x| x.run_cnt);
        for _ in 0..20 {
            let _ = fs::File::open(probe);
        }
        let after = sys::progs_of(p.pid())?.get(&id).map_or(0, |x| x.run_cnt);
        if after >= before + 20 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!(
                "bench: program {id} of pid {} does not run on openat after 30 s",
                p.pid()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon at rest.
struct Idle {
    /// Percent of one core.
    cpu_pct: f64,
    rss_mb: f64,
    /// Percent of one core, by thread name.
    threads: Vec<(String, f64)>,
}

/// CPU (percent of one core) of the daemon and its RSS (MB) after `secs` seconds during which
/// a thread of ours opens a registered credential 100 times a second.
fn idle(pid: u32, watched: &Path, secs: u64) -> Result<Idle> {
    let stop = Arc::new(AtomicBool::new(false));
    let gen = {
        let stop = Arc::clone(&stop);
        let path = watched.to_path_buf();
        std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::File::open(&path);
                n += 1;
                next += Duration::from_millis(10);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            n
        })
    };
    let cpu0 = sys::cpu_seconds(pid);
    let threads0 = sys::thread_cpu_seconds(pid);
    let t0 = Instant::now();
    let slept = sys::sleep(Duration::from_secs(secs));
    let cpu1 = sys::cpu_seconds(pid);
    let threads1 = sys::thread_cpu_seconds(pid);
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let opens = gen.join().unwrap_or(0);
    slept?;
    let used = cpu1? - cpu0?;
    let pct = used / wall * 100.0;
    let rss = sys::rss_bytes(pid)? as f64 / MB;
    eprintln!(
        "bench:   {opens} watched opens in {wall:.1} s ({:.0}/s): daemon used {:.3} s of CPU \
         ({pct:.2}% of a core), RSS {rss:.1} MB",
        opens as f64 / wall,
        used
    );
    let mut threads: Vec<(String, f64)> = threads1
        .iter()
        .map(|(name, s)| {
            let before = threads0.get(name).copied().unwrap_or(0.0);
            (name.clone(), (s - before) / wall * 100.0)
        })
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Idle {
        cpu_pct: pct,
        rss_mb: rss,
        threads,
    })
}

/// Waits until the daemon has used no CPU for 300 ms (it has drained the ring buffer).
fn wait_until_idle(pid: u32, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = sys::cpu_seconds(pid)?;
    let mut quiet = 0;
    while quiet < 3 && start.elapsed() < timeout {
        sys::sleep(Duration::from_millis(100))?;
        let now = sys::cpu_seconds(pid)?;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    Ok(())
}

fn start_bpftrace(log: &Path, script: &str) -> Result<Managed> {
    let out = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut c = Command::new("bpftrace");
    c.arg("-e")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    eprintln!("+ bpftrace -e '{script}' >{} 2>&1", log.display());
    Managed::spawn("bpftrace", c, libc::SIGINT)
}

/// The id of bpftrace's program whose name starts with `name`, once it is loaded and runs (on
/// the `openat` or `close` of `probe`).
fn bpftrace_prog(bt: &mut Managed, log: &Path, probe: &Path, name: &str) -> Result<u32> {
    let start = Instant::now();
    let id = loop {
        sys::check_interrupted()?;
        if let Some(status) = bt.exited() {
            let text = fs::read_to_string(log).unwrap_or_default();
            bail!(
                "bench: bpftrace exited ({status}) before attaching; the end of {}:\n{}",
                log.display(),
                tail(&text, 15)
            );
        }
        let progs = sys::progs_of(bt.pid())?;
        if !progs.is_empty() {
            let all = bpftool::progs()?;
            let named = progs.keys().copied().find(|id| {
                all.iter().any(|p| {
                    p["id"].as_u64() == Some(u64::from(*id))
                        && p["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("sys_enter_open"))
                })
            });
            if let Some(id) =
                named.or_else(|| (progs.len() == 1).then(|| *progs.keys().next().unwrap_or(&0)))
            {
                break id;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "bench: bpftrace loaded no {name}* program within 60 s (see {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_attached(bt, id, probe)?;
    Ok(id)
}

/// Runs the pipeline example pinned to one CPU; returns the JSON it prints last.
fn run_pipeline(
    bin: &Path,
    reg: &registry::BenchRegistry,
    secs: u64,
    cpu: Option<usize>,
) -> Result<Value> {
    sys::check_interrupted()?;
    let mut c = Command::new(bin);
    c.arg("--registry")
        .arg(&reg.path)
        .arg("--seconds")
        .arg(secs.to_string());
    if let Some(cpu) = cpu {
        c.arg("--cpu").arg(cpu.to_string());
    }
    eprintln!(
        "+ {} --registry {} --seconds {secs}{}",
        bin.display(),
        reg.path.display(),
        cpu.map(|c| format!(" --cpu {c}")).unwrap_or_default()
    );
    json_result(c, bin)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.opts)
    }

    #[test]
    fn the_report_command_reproduces_the_options_that_differ() {
        let o = parse(&[]).expect("defaults parse");
        assert_eq!(command_line(&o), "cargo xtask bench");
        assert!(Step::value_variants().iter().all(|s| wants(&o, *s)));
        let o = parse(&[
            "--tcp-rounds",
            "3",
            "--flood-secs",
            "5",
            "--only",
            "tcp",
            "--only",
            "pipeline",
        ])
        .expect("options parse");
        assert_eq!(
            command_line(&o),
            "cargo xtask bench --tcp-rounds 3 --flood-secs 5 --only tcp --only pipeline"
        );
        assert!(wants(&o, Step::Tcp) && wants(&o, Step::Pipeline));
        assert!(!wants(&o, Step::Openat) && !wants(&o, Step::Floods));
    }

    #[test]
    fn zero_tcp_rounds_and_unknown_steps_are_refused() {
        for bad in [&["--tcp-rounds", "0"][..], &["--only", "nothing"]] {
            let e = parse(bad).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
