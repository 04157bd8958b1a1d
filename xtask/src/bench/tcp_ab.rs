//! Step 7 of `cargo xtask bench`: loopback TCP without probes (A) and with the daemon attached
//! (B), as an A/B of its own.
//!
//! Single runs of the same workload vary by tens of percent on a shared machine, and series
//! taken minutes apart drift further, so the two sides are never compared as two separate
//! series. Each of `--tcp-rounds` rounds runs every workload once without the daemon and once
//! with it, back to back, and gives one paired ratio per workload (A/B: above 1 when the daemon
//! slows it); the report gives the median of those ratios and their range. Which side goes
//! first alternates (A B, B A, A B, ...), so a load that rises or falls across a round, and what
//! a run gains or loses by going first, count against each side equally often.
//!
//! That order also puts the B runs of two rounds next to each other (A B | B A | A B | ...): the
//! daemon is started before the first B of such a pair and stopped after the second, so R rounds
//! cost ceil(R/2) starts, not R. Each start waits for the daemon's ready line, checks that its
//! TCP hooks (the cgroup `sock_addr` and `skb` programs) are loaded, then waits until it has
//! used no CPU for 300 ms, so that its start-up work (reading /proc) is not measured; each stop
//! waits until the kernel has freed those programs (loaded, they would still be attached). The
//! seconds each start took are in the details (`tcp_ab.daemon_starts_s`).
//!
//! Each side runs a stream (2 s), a 64-byte ping-pong (2 s) and 3000 short connections, each in
//! a process of its own (`tcp_loop`), on the loops' CPU. Side B also runs 3000 connections by a
//! holder (a process that read a registered credential first), next to the other process's
//! connections and in alternating order; the holder row is paired the same way: the extra
//! microseconds per connection of the holder in each round, their median and range. A round
//! takes about 10 s.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{
    bpftool, median, ratio,
    report::{Report, Target},
    start_daemon,
    sys::{self, Managed},
    tail,
    tcp_loop::{self, Mode, Outcome},
    wait_for_ready, wait_until_idle, Bench,
};

/// Seconds of each stream and ping-pong run; connections of each connects run.
const SECS: f64 = 2.0;
const CONNECTS: u64 = 3000;

/// The daemon's programs that loopback TCP passes: a connect's hook and the egress hook every
/// packet passes (as `bpftool prog show` names their types).
const TCP_HOOKS: [&str; 2] = ["cgroup_sock_addr", "cgroup_skb"];

/// One side of a round: each workload once.
#[derive(Clone, Copy, Debug)]
struct Side {
    stream: Outcome,
    pingpong: Outcome,
    connects: Outcome,
}

/// One round: both sides, back to back.
pub struct Round {
    /// The side with the daemon ran first.
    daemon_first: bool,
    without: Side,
    with: Side,
    /// A holder's connections, with the daemon, next to `with.connects`.
    holder: Outcome,
}

/// What the A/B measured: its rounds, the seconds each start of the daemon took, and the time
/// the workloads spent in the daemon's programs.
pub struct TcpAb {
    rounds: Vec<Round>,
    starts_s: Vec<f64>,
    in_programs: InPrograms,
}

/// A ping-pong and a stream with the daemon attached and `bpf_stats` on: the nanoseconds all
/// the daemon's programs ran meanwhile, as the kernel counts them (two clock reads per run
/// included: an upper bound of the programs' own time; the kernel's dispatch to them is not
/// counted). Wall time on this machine varies by tens of percent from run to run, far more
/// than the 2% a hook may cost, where the kernel's count of the programs' time does not.
#[derive(Clone, Copy, Debug)]
pub struct InPrograms {
    pingpong: Outcome,
    pingpong_ns: u64,
    stream: Outcome,
    stream_ns: u64,
}

impl InPrograms {
    /// Nanoseconds in the daemon's programs per ping-pong round trip.
    fn pingpong_ns_per_op(&self) -> Option<f64> {
        (self.pingpong.ops > 0).then(|| self.pingpong_ns as f64 / self.pingpong.ops as f64)
    }

    /// Share (percent) of a run's wall time spent in the daemon's programs.
    fn share(ns: u64, run: &Outcome) -> Option<f64> {
        (run.elapsed_s > 0.0).then(|| ns as f64 / (run.elapsed_s * 1e9) * 100.0)
    }

    fn pingpong_share(&self) -> Option<f64> {
        Self::share(self.pingpong_ns, &self.pingpong)
    }

    fn stream_share(&self) -> Option<f64> {
        Self::share(self.stream_ns, &self.stream)
    }
}

/// Round `r`'s two runs in order, each `true` when it is with the daemon: A B, then B A, ...
fn order(r: usize) -> [bool; 2] {
    let daemon_first = r % 2 == 1;
    [daemon_first, !daemon_first]
}

/// Step 7: `--tcp-rounds` rounds of A/B (stats off), the daemon started and stopped around its
/// runs.
pub fn tcp_ab(b: &Bench, stats: &sys::BpfStats, rep: &mut Report) -> Result<TcpAb> {
    stats.set(false)?;
    let n = b.opts.tcp_rounds as usize;
    let log = b.out_dir.join("daemon-tcp.log");
    let mut daemon: Option<Daemon> = None;
    let mut starts_s = Vec::new();
    let mut rounds = Vec::new();
    for r in 0..n {
        let (mut without, mut with) = (None, None);
        for on in order(r) {
            if on {
                let d = match &mut daemon {
                    Some(d) => d,
                    None => {
                        let started = Instant::now();
                        let d = start(b, &log)?;
                        starts_s.push(started.elapsed().as_secs_f64());
                        daemon.insert(d)
                    }
                };
                with = Some(side_with_daemon(b, r, &mut d.managed, &log)?);
            } else {
                if let Some(d) = daemon.take() {
                    stop(d, &log, rep)?;
                }
                without = Some(side_without_daemon(b)?);
            }
        }
        let (Some(without), Some((with, holder))) = (without, with) else {
            bail!("bench: TCP round {} ran only one side", r + 1);
        };
        let round = Round {
            daemon_first: order(r)[0],
            without,
            with,
            holder,
        };
        eprintln!("bench:   TCP round {}/{n}: {}", r + 1, round.summary());
        rounds.push(round);
    }
    if let Some(d) = daemon.take() {
        stop(d, &log, rep)?;
    }
    let in_programs = in_programs(b, stats, &log, rep)?;
    Ok(TcpAb {
        rounds,
        starts_s,
        in_programs,
    })
}

/// A ping-pong and a stream with a daemon of its own and `bpf_stats` on (see [`InPrograms`]).
fn in_programs(
    b: &Bench,
    stats: &sys::BpfStats,
    log: &Path,
    rep: &mut Report,
) -> Result<InPrograms> {
    let mut d = start(b, log)?;
    let pid = d.managed.pid();
    stats.set(true)?;
    let run = |mode: Mode| -> Result<(Outcome, u64)> {
        let before = sys::progs_of(pid)?;
        let o = tcp_loop::spawn(mode, SECS, 0, None, b.cpu)?;
        let after = sys::progs_of(pid)?;
        let ns = after
            .iter()
            .map(|(id, a)| {
                let was = before.get(id).map_or(0, |p| p.run_time_ns);
                a.run_time_ns.saturating_sub(was)
            })
            .sum();
        Ok((o, ns))
    };
    let measured = run(Mode::Pingpong).and_then(|p| Ok((p, run(Mode::Stream)?)));
    stats.set(false)?;
    if let Some(status) = d.managed.exited() {
        bail!("bench: the daemon exited ({status}) during the TCP runs with bpf_stats on");
    }
    stop(d, log, rep)?;
    let ((pingpong, pingpong_ns), (stream, stream_ns)) = measured?;
    let m = InPrograms {
        pingpong,
        pingpong_ns,
        stream,
        stream_ns,
    };
    eprintln!(
        "bench:   TCP in the daemon's programs: ping-pong {:.0} ns per round trip ({:.2}% of \
         its time), stream {:.2}% of its time",
        m.pingpong_ns_per_op().unwrap_or(f64::NAN),
        m.pingpong_share().unwrap_or(f64::NAN),
        m.stream_share().unwrap_or(f64::NAN),
    );
    Ok(m)
}

/// A daemon of the A/B, and the ids of its TCP hooks' programs.
struct Daemon {
    managed: Managed,
    hooks: BTreeSet<u32>,
}

/// Starts the daemon on the bench's registry, checks that its TCP hooks are loaded, and waits
/// until its start-up work is done.
fn start(b: &Bench, log: &Path) -> Result<Daemon> {
    let mut managed = start_daemon(&b.daemon_bin, &b.reg.path, log)?;
    wait_for_ready(&mut managed, log, Duration::from_secs(90))?;
    let pid = managed.pid();
    let ours = sys::progs_of(pid)?;
    let all = bpftool::progs()?;
    let hooks: Vec<(u32, &str)> = all
        .iter()
        .filter_map(|p| Some((u32::try_from(p["id"].as_u64()?).ok()?, p["type"].as_str()?)))
        .filter(|(id, kind)| ours.contains_key(id) && TCP_HOOKS.contains(kind))
        .collect();
    for hook in TCP_HOOKS {
        if !hooks.iter().any(|(_, kind)| *kind == hook) {
            bail!(
                "bench: the daemon (pid {pid}) holds no {hook} program: its TCP hooks are not \
                 loaded, and the A/B would measure nothing (see {})",
                log.display()
            );
        }
    }
    wait_until_idle(pid, Duration::from_secs(30))?;
    Ok(Daemon {
        managed,
        hooks: hooks.into_iter().map(|(id, _)| id).collect(),
    })
}

/// Stops the daemon (SIGTERM; a daemon that does not exit cleanly is noted), then waits until
/// the kernel has freed its TCP hooks' programs: a program still loaded after its daemon is
/// gone is still attached (to the cgroup), and the next runs would not be without probes.
fn stop(mut d: Daemon, log: &Path, rep: &mut Report) -> Result<()> {
    let status = d.managed.stop(Duration::from_secs(20))?;
    if !status.success() {
        rep.note(format!(
            "a daemon of the TCP A/B exited with {status} on SIGTERM (see {})",
            log.display()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = bpftool::progs()?
            .iter()
            .filter_map(|p| u32::try_from(p["id"].as_u64()?).ok())
            .filter(|id| d.hooks.contains(id))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "bench: the daemon's TCP programs {left:?} are still loaded 10 s after it \
                 stopped: runs without probes would not be"
            );
        }
        sys::sleep(Duration::from_millis(100))?;
    }
}

/// Side A: each workload once.
fn side_without_daemon(b: &Bench) -> Result<Side> {
    Ok(Side {
        stream: tcp_loop::spawn(Mode::Stream, SECS, 0, None, b.cpu)?,
        pingpong: tcp_loop::spawn(Mode::Pingpong, SECS, 0, None, b.cpu)?,
        connects: tcp_loop::spawn(Mode::Connects, 0.0, CONNECTS, None, b.cpu)?,
    })
}

/// Side B of round `r`: the workloads, then a holder's connections, before the other process's
/// in even rounds and after them in odd ones. Fails when the daemon exited meanwhile.
fn side_with_daemon(b: &Bench, r: usize, d: &mut Managed, log: &Path) -> Result<(Side, Outcome)> {
    let holder_first = r.is_multiple_of(2);
    let stream = tcp_loop::spawn(Mode::Stream, SECS, 0, None, b.cpu)?;
    let pingpong = tcp_loop::spawn(Mode::Pingpong, SECS, 0, None, b.cpu)?;
    let mut connects = Vec::new();
    for holder in [holder_first, !holder_first] {
        let read = holder.then_some(b.reg.watched.as_path());
        connects.push((
            holder,
            tcp_loop::spawn(Mode::Connects, 0.0, CONNECTS, read, b.cpu)?,
        ));
    }
    if let Some(status) = d.exited() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "bench: the daemon exited ({status}) during the TCP runs; the end of {}:\n{}",
            log.display(),
            tail(&text, 15)
        );
    }
    let pick = |h: bool| {
        connects
            .iter()
            .find(|(holder, _)| *holder == h)
            .map(|c| c.1)
    };
    let (Some(other), Some(holder)) = (pick(false), pick(true)) else {
        bail!("bench: TCP round {}: a connects run is missing", r + 1);
    };
    Ok((
        Side {
            stream,
            pingpong,
            connects: other,
        },
        holder,
    ))
}

impl Round {
    fn stream(&self) -> Option<f64> {
        ratio(
            self.without.stream.bytes_per_sec(),
            self.with.stream.bytes_per_sec(),
        )
    }

    fn pingpong(&self) -> Option<f64> {
        ratio(
            self.without.pingpong.ops_per_sec(),
            self.with.pingpong.ops_per_sec(),
        )
    }

    fn connects(&self) -> Option<f64> {
        ratio(
            self.without.connects.ops_per_sec(),
            self.with.connects.ops_per_sec(),
        )
    }

    /// Microseconds a holder's connection takes more than another process's, both with the
    /// daemon.
    fn holder_extra_us(&self) -> Option<f64> {
        let (h, o) = (self.holder.ops_per_sec(), self.with.connects.ops_per_sec());
        (h > 0.0 && o > 0.0).then(|| 1e6 / h - 1e6 / o)
    }

    fn summary(&self) -> String {
        let x = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.3}x"));
        format!(
            "{} first; stream {:.2}/{:.2} GB/s {}, ping-pong {:.0}/{:.0} /s {}, connections \
             {:.0}/{:.0} /s {}, a holder's {:+.1} us per connection",
            if self.daemon_first {
                "daemon"
            } else {
                "no probes"
            },
            self.without.stream.bytes_per_sec() / 1e9,
            self.with.stream.bytes_per_sec() / 1e9,
            x(self.stream()),
            self.without.pingpong.ops_per_sec(),
            self.with.pingpong.ops_per_sec(),
            x(self.pingpong()),
            self.without.connects.ops_per_sec(),
            self.with.connects.ops_per_sec(),
            x(self.connects()),
            self.holder_extra_us().unwrap_or(f64::NAN),
        )
    }

    fn to_json(&self) -> Value {
        let side = |s: &Side| {
            json!({
                "stream_bytes_per_s": s.stream.bytes_per_sec(),
                "pingpong_per_s": s.pingpong.ops_per_sec(),
                "connects_per_s": s.connects.ops_per_sec(),
            })
        };
        json!({
            "daemon_first": self.daemon_first,
            "without_probes": side(&self.without),
            "with_daemon": side(&self.with),
            "holder_connects_per_s_with_daemon": self.holder.ops_per_sec(),
        })
    }
}

/// The rounds' paired values of one measurement: their median and range.
#[derive(Debug)]
struct Paired {
    values: Vec<f64>,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl Paired {
    /// Rounds where a value could not be computed (a zero rate) are left out.
    fn of(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        let values: Vec<f64> = values
            .into_iter()
            .flatten()
            .filter(|v| v.is_finite())
            .collect();
        let median = (!values.is_empty()).then(|| median(&values));
        let min = values.iter().copied().min_by(f64::total_cmp);
        let max = values.iter().copied().max_by(f64::total_cmp);
        Self {
            values,
            median,
            min,
            max,
        }
    }

    /// Rounds whose value is above `line` (for a ratio, 1: the daemon was slower).
    fn above(&self, line: f64) -> usize {
        self.values.iter().filter(|v| **v > line).count()
    }

    fn to_json(&self, line: f64) -> Value {
        json!({
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "per_round": self.values,
            "rounds_above": {"line": line, "count": self.above(line)},
        })
    }
}

/// Adds the row of a paired measurement: its median, and its range in the name and the JSON;
/// a note when the range lies on both sides of the target.
#[expect(
    clippy::too_many_arguments,
    reason = "the arguments of Report::add, and the paired values"
)]
fn add_paired(
    rep: &mut Report,
    key: &str,
    what: &str,
    p: &Paired,
    unit: &str,
    digits: usize,
    target: Option<Target>,
    rounds: usize,
) {
    let u = if unit == "x" {
        "x".to_owned()
    } else {
        format!(" {unit}")
    };
    let range = match (p.min, p.max) {
        (Some(lo), Some(hi)) => format!(", range {lo:.digits$}{u} to {hi:.digits$}{u}"),
        _ => String::new(),
    };
    let counted = match p.values.len() {
        n if n == rounds => n.to_string(),
        n => format!("{n} (of {rounds})"),
    };
    let name = format!("{what} (median of {counted} paired rounds{range})");
    let row = rep.add(key, &name, p.median, unit, digits, target);
    row.range = p.min.zip(p.max);
    if let (Some(Target::AtMost(t)), Some(lo), Some(hi)) = (target, p.min, p.max) {
        if lo <= t && t < hi {
            rep.note(format!(
                "{what}: the rounds range from {lo:.digits$}{u} to {hi:.digits$}{u}, on both \
                 sides of the target ({t:.digits$}{u}); the median decides, more rounds \
                 (--tcp-rounds) or a quieter machine make it surer"
            ));
        }
    }
}

/// The loopback TCP rows: what the daemon costs every connection (median of the rounds' paired
/// ratios, the 2% target on stream and ping-pong), and a holder's connection.
pub fn report_tcp(rep: &mut Report, ab: &TcpAb) {
    let rounds = &ab.rounds;
    let n = rounds.len();
    let base_stream: Vec<f64> = rounds
        .iter()
        .map(|r| r.without.stream.bytes_per_sec())
        .collect();
    rep.add(
        "tcp.stream_base_gbps",
        &format!("Loopback TCP stream, no probes (median of {n})"),
        Some(median(&base_stream) / 1e9),
        "GB/s",
        2,
        None,
    );
    let stream = Paired::of(rounds.iter().map(Round::stream));
    let pingpong = Paired::of(rounds.iter().map(Round::pingpong));
    let connects = Paired::of(rounds.iter().map(Round::connects));
    let holder = Paired::of(rounds.iter().map(Round::holder_extra_us));
    let two_percent = Some(Target::AtMost(1.02));
    add_paired(
        rep,
        "tcp.stream_slowdown",
        "Loopback TCP stream throughput, no probes / daemon",
        &stream,
        "x",
        3,
        two_percent,
        n,
    );
    add_paired(
        rep,
        "tcp.pingpong_slowdown",
        "Loopback TCP 64-byte ping-pong rate, no probes / daemon",
        &pingpong,
        "x",
        3,
        two_percent,
        n,
    );
    let p = &ab.in_programs;
    rep.add(
        "tcp.pingpong_in_programs_ns",
        "Loopback TCP ping-pong: time in the daemon's programs per round trip (bpf_stats, its \
         two clock reads per run included)",
        p.pingpong_ns_per_op(),
        "ns",
        0,
        None,
    );
    rep.add(
        "tcp.pingpong_in_programs_pct",
        "Loopback TCP ping-pong: share of its time in the daemon's programs",
        p.pingpong_share(),
        "%",
        2,
        Some(Target::AtMost(2.0)),
    );
    rep.add(
        "tcp.stream_in_programs_pct",
        "Loopback TCP stream: share of its time in the daemon's programs",
        p.stream_share(),
        "%",
        2,
        Some(Target::AtMost(2.0)),
    );
    add_paired(
        rep,
        "tcp.connects_slowdown",
        "Loopback TCP connections (connect, 64 B each way, close), no probes / daemon",
        &connects,
        "x",
        3,
        None,
        n,
    );
    add_paired(
        rep,
        "tcp.holder_connection_extra_us",
        "A holder's connection, extra time against another process's (daemon attached)",
        &holder,
        "us",
        1,
        None,
        n,
    );
    rep.detail(
        "tcp_ab",
        json!({
            "rounds": n,
            "order": "rounds alternate which side runs first (A B, B A, ...); \
                      paired ratios are no probes / daemon",
            "daemon_starts_s": ab.starts_s,
            "paired": {
                "stream": stream.to_json(1.0),
                "pingpong": pingpong.to_json(1.0),
                "connects": connects.to_json(1.0),
                "holder_connection_extra_us": holder.to_json(0.0),
            },
            "per_round": rounds.iter().map(Round::to_json).collect::<Vec<_>>(),
            "in_programs": {
                "what": "one ping-pong and one stream with the daemon and bpf_stats on: the \
                         nanoseconds all its programs ran (two clock reads per run included; \
                         the kernel's dispatch to them is not counted)",
                "pingpong_round_trips": p.pingpong.ops,
                "pingpong_elapsed_s": p.pingpong.elapsed_s,
                "pingpong_program_ns": p.pingpong_ns,
                "stream_bytes": p.stream.bytes,
                "stream_elapsed_s": p.stream.elapsed_s,
                "stream_program_ns": p.stream_ns,
            },
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each round runs both sides once, the first side alternates, and the daemon's runs of two
    /// rounds are adjacent: R rounds need ceil(R/2) starts of the daemon.
    #[test]
    fn rounds_alternate_and_share_the_daemon_in_pairs() {
        for rounds in 1..=9 {
            let runs: Vec<bool> = (0..rounds).flat_map(order).collect();
            for (r, pair) in runs.chunks(2).enumerate() {
                assert_ne!(pair[0], pair[1], "round {r} of {rounds}: {runs:?}");
                assert_eq!(pair[0], r % 2 == 1, "round {r} of {rounds}: {runs:?}");
            }
            let starts = runs
                .iter()
                .enumerate()
                .filter(|&(i, on)| *on && (i == 0 || !runs[i - 1]))
                .count();
            assert_eq!(starts, rounds.div_ceil(2), "{rounds} rounds: {runs:?}");
        }
    }

    #[test]
    fn time_in_programs_is_per_round_trip_and_a_share_of_the_run() {
        let run = |ops, elapsed_s| Outcome {
            ops,
            bytes: ops * 64,
            elapsed_s,
        };
        let m = InPrograms {
            pingpong: run(200_000, 2.0),
            pingpong_ns: 20_000_000,
            stream: run(0, 2.0),
            stream_ns: 10_000_000,
        };
        assert_eq!(m.pingpong_ns_per_op(), Some(100.0));
        assert_eq!(m.pingpong_share(), Some(1.0));
        assert_eq!(m.stream_share(), Some(0.5));
        let none = InPrograms {
            pingpong: run(0, 0.0),
            ..m
        };
        assert_eq!(
            (none.pingpong_ns_per_op(), none.pingpong_share()),
            (None, None)
        );
    }

    #[test]
    fn paired_values_give_median_and_range_without_missing_rounds() {
        let p = Paired::of([
            Some(1.10),
            Some(0.95),
            None,
            Some(1.01),
            Some(f64::INFINITY),
            Some(1.30),
            Some(0.90),
        ]);
        assert_eq!(p.values.len(), 5, "{p:?}");
        assert_eq!(p.median, Some(1.01), "{p:?}");
        assert_eq!((p.min, p.max), (Some(0.90), Some(1.30)), "{p:?}");
        assert_eq!(p.above(1.0), 3, "{p:?}");
        assert_eq!(Paired::of([None]).median, None);
    }

    #[test]
    fn a_paired_row_names_its_rounds_and_range_and_keeps_the_range_in_json() {
        let mut rep = Report::default();
        let p = Paired::of([Some(1.05), Some(0.97), Some(1.01)]);
        add_paired(
            &mut rep,
            "k",
            "Stream",
            &p,
            "x",
            3,
            Some(Target::AtMost(1.02)),
            3,
        );
        let row = &rep.rows[0];
        assert_eq!(
            row.name,
            "Stream (median of 3 paired rounds, range 0.970x to 1.050x)"
        );
        assert_eq!(row.status(), "PASS");
        let j = rep.json("cmd");
        assert_eq!(j["measurements"][0]["value"], json!(1.01));
        assert_eq!(
            j["measurements"][0]["range"],
            json!({"min": 0.97, "max": 1.05})
        );
        assert_eq!(
            rep.notes.len(),
            1,
            "the range straddles 1.02x: {:?}",
            rep.notes
        );
        assert!(rep.notes[0].contains("both sides"), "{:?}", rep.notes);

        // A round left out is said; a range below the target is no note.
        let p = Paired::of([Some(5.0), None, Some(7.0)]);
        add_paired(&mut rep, "h", "Holder", &p, "us", 1, None, 3);
        assert_eq!(
            rep.rows[1].name,
            "Holder (median of 2 (of 3) paired rounds, range 5.0 us to 7.0 us)"
        );
        let p = Paired::of([Some(0.99), Some(1.01)]);
        add_paired(
            &mut rep,
            "s",
            "S",
            &p,
            "x",
            3,
            Some(Target::AtMost(1.02)),
            2,
        );
        assert_eq!(rep.notes.len(), 1, "{:?}", rep.notes);
        rep.add("plain", "Plain", Some(1.0), "x", 3, None);
        assert!(rep.json("cmd")["measurements"][3].get("range").is_none());
    }
}
