//! The userspace pipeline on one thread: kernel records (bytes, as the ring buffer hands them
//! over) -> `decode` -> `Engine::handle` -> JSON into a `Vec<u8>`, with no I/O of our own.
//! The target (docs/ARCHITECTURE.md, "Targets"): at least 2M records/s on one core. Run by `cargo xtask bench`, or alone:
//!
//! ```sh
//! cargo run --release -p monitor-user --example pipeline_bench -- [--registry FILE] [--seconds N] [--cpu N] [--mixed-only]
//! ```
//!
//! The records are synthetic but shaped like a host's: a population of known processes (made
//! known by fork and exec records first, so that the steady state is measured, not `/proc`
//! reads), opens of registered credentials, of unregistered watched files and prefilter false
//! positives, connections by holders and by others, and process churn (fork, exec, exit).
//! The engine's proc root is an empty directory: no synthetic pid can be confused with a real
//! process. The records of a stream lie back to back in one buffer, as in the kernel's ring
//! buffer ([`Ring`]): each behind an 8-byte header, 8-byte aligned, read in place. A stream
//! takes at most the daemon's ring buffer (`EVENTS_RING_BYTES`, 8 MiB): more records than that
//! never wait for the daemon, which reads each soon after the kernel wrote it; a stream read
//! again and again from end to end is a ring the daemon keeps emptying when it is full.
//! The mixed stream and JSON alone are measured in [`ROUNDS`] rounds and their figures are the
//! median round's (this VM's neighbours slow some rounds by up to 2x); the rounds are printed.
//! Human-readable lines go to stderr, one JSON object with the results to stdout.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use monitor_common::{
    ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, OpenEvent, OpenOp,
    AF_INET, EVENTS_RING_BYTES, PATH_CAP,
};
use nhiscope::{
    domain::decode,
    domain::engine::{Clock, Engine},
    domain::event::Event,
    domain::registry::{self, Registry},
    sense::proc_host::ProcHost,
};

// The daemon's allocator, tuned as the daemon tunes it (`app::alloc`), so that the pipeline is
// measured as it runs.
nhiscope::daemon_allocator!();

/// Processes alive for the whole run; they open credentials and connect.
const POPULATION: u32 = 512;
const FIRST_PID: u32 = 100_000;
/// Short-lived processes: forked, exec'd and gone within one cycle.
const FIRST_CHURN_PID: u32 = 300_000;
/// Records of one kind at most in its own stream.
const KIND_RECORDS: usize = 4096;
/// Rounds of the mixed stream and of JSON alone; each figure is the median round.
const ROUNDS: usize = 5;

struct Args {
    registry: Option<PathBuf>,
    seconds: f64,
    cpu: Option<usize>,
    /// Only the mixed stream (for profiling it with `perf record`).
    mixed_only: bool,
}

fn usage() -> ! {
    eprintln!("usage: pipeline_bench [--registry FILE] [--seconds N] [--cpu N] [--mixed-only]");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        registry: None,
        seconds: 5.0,
        cpu: None,
        mixed_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--registry" => a.registry = Some(PathBuf::from(value())),
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--cpu" => a.cpu = Some(value().parse().unwrap_or_else(|_| usage())),
            "--mixed-only" => a.mixed_only = true,
            _ => usage(),
        }
    }
    a
}

/// 100 NHIs like `cargo xtask bench` generates, for running this example alone.
fn builtin_registry() -> String {
    let mut y = String::from("nhis:\n");
    for i in 0..100 {
        y += &format!(
            "  - id: bench-nhi-{i:02}\n    credentials:\n      - /etc/nhiscope-bench/nhi-{i:02}/token\n"
        );
        if i % 3 == 0 {
            y += &format!(
                "    readers:\n      exe: [/opt/bench/bin/worker-{i:02}, /usr/bin/python3*]\n"
            );
        }
        if i % 2 == 0 {
            y += &format!(
                "    endpoints:\n      - host: \"*.svc-{i:02}.example.com\"\n        port: 443\n      - cidr: 10.{i}.0.0/16\n        ports: [5432, 6432]\n"
            );
        }
    }
    y
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pin(cpu: usize) {
    // SAFETY: the set is plain data we own; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("pipeline_bench: cannot pin to CPU {cpu}; running unpinned");
        }
    }
}

/// Builds the records.
struct Gen {
    ts: u64,
}

impl Gen {
    fn hdr(&mut self, kind: EventKind, pid: u32, comm: &str) -> EventHeader {
        self.ts += 1_000;
        let mut h = EventHeader::zeroed();
        h.kind = kind as u32;
        h.pid = pid;
        h.tid = pid;
        h.uid = 1000;
        h.gid = 1000;
        h.ts_ns = self.ts;
        h.cgroup_id = 4242;
        let n = comm.len().min(15);
        h.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        h
    }

    fn open(&mut self, pid: u32, path: &str) -> Vec<u8> {
        let n = path.len().min(PATH_CAP - 1);
        let mut o: OpenEvent = zeroed();
        o.hdr = self.hdr(EventKind::Open, pid, "worker");
        o.op = OpenOp::Openat as u32;
        o.dfd = -100;
        o.open_flags = 0o2000000;
        o.ret = 3;
        o.path_len = n as u32;
        o.path[..n].copy_from_slice(&path.as_bytes()[..n]);
        // As the kernel sends it: only the `names` bytes in use (none here).
        let mut bytes = decode::encode(&o);
        bytes.truncate(std::mem::offset_of!(OpenEvent, names) + o.names_len as usize);
        bytes
    }

    fn exec(&mut self, pid: u32, exe: &str, args: &[&str]) -> Vec<u8> {
        let mut e: ExecEvent = zeroed();
        e.hdr = self.hdr(EventKind::Exec, pid, exe.rsplit('/').next().unwrap_or(exe));
        e.old_tid = pid;
        e.filename_len = exe.len() as u32;
        e.argc = args.len() as u32;
        e.filename[..exe.len()].copy_from_slice(exe.as_bytes());
        let mut at = 0;
        for a in args {
            e.args[at..at + a.len()].copy_from_slice(a.as_bytes());
            at += a.len() + 1;
        }
        e.args_len = at as u32;
        decode::encode(&e)
    }

    fn fork(&mut self, parent: u32, child: u32) -> Vec<u8> {
        let mut f: ForkEvent = zeroed();
        f.hdr = self.hdr(EventKind::Fork, parent, "worker");
        f.child_tid = child;
        decode::encode(&f)
    }

    fn exit(&mut self, pid: u32) -> Vec<u8> {
        let mut x: ExitEvent = zeroed();
        x.hdr = self.hdr(EventKind::Exit, pid, "worker");
        decode::encode(&x)
    }

    fn connect(&mut self, pid: u32, addr: [u8; 4], port: u16) -> Vec<u8> {
        self.connect_flagged(pid, addr, port, 0)
    }

    /// A connection the kernel found open in `pid`'s file table when it read a credential.
    fn existing(&mut self, pid: u32, addr: [u8; 4], port: u16) -> Vec<u8> {
        self.connect_flagged(pid, addr, port, monitor_common::HDR_EXISTING)
    }

    fn connect_flagged(&mut self, pid: u32, addr: [u8; 4], port: u16, flags: u32) -> Vec<u8> {
        let mut c: ConnectEvent = zeroed();
        c.hdr = self.hdr(EventKind::Connect, pid, "worker");
        c.hdr.flags |= flags;
        c.family = AF_INET;
        c.sport = 40_000;
        c.dport = port;
        c.saddr[..4].copy_from_slice(&[10, 0, 0, 5]);
        c.daddr[..4].copy_from_slice(&addr);
        decode::encode(&c)
    }
}

/// A record with every field zero, so that fields added to the records later need no change
/// here.
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for monitor_common's repr(C) plain-data records (integers and byte
    // arrays), for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// The kinds of records, with their share of the steady-state stream (per 20 records).
const MIX: &[(&str, usize)] = &[
    ("open_registered", 5),
    ("open_unregistered", 2),
    ("open_false_positive", 1),
    ("connect_holder", 2),
    ("connect_other", 4),
    ("fork", 2),
    ("exec", 2),
    ("exit", 2),
];

/// Records laid out as the kernel's BPF ring buffer holds them: one after another, each behind
/// an 8-byte header that gives its length, and each header 8-byte aligned; the consumer reads
/// a record where it lies, as `aya`'s `RingBuf` hands it over.
struct Ring {
    words: Vec<u64>,
    records: usize,
}

/// The ring buffer's record header (`BPF_RINGBUF_HDR_SZ`).
const RING_HDR: usize = 8;

impl Ring {
    fn new(records: Vec<Vec<u8>>) -> Self {
        let bytes: usize = records
            .iter()
            .map(|r| RING_HDR + r.len().next_multiple_of(8))
            .sum();
        let mut words = vec![0u64; bytes / 8];
        // SAFETY: plain integers viewed as bytes, within the buffer's length, borrowed only
        // while the records are copied in.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        let mut at = 0;
        for r in &records {
            buf[at..at + 4].copy_from_slice(&(r.len() as u32).to_ne_bytes());
            at += RING_HDR;
            buf[at..at + r.len()].copy_from_slice(r);
            at += r.len().next_multiple_of(8);
        }
        Self {
            words,
            records: records.len(),
        }
    }

    fn len(&self) -> usize {
        self.records
    }

    /// The bytes `record` takes in a ring: its header and its bytes, padded to 8.
    fn bytes(record: &[u8]) -> usize {
        RING_HDR + record.len().next_multiple_of(8)
    }

    /// Whole groups of records, in order, for as long as they fit in the daemon's ring buffer
    /// together: the records of one stream.
    fn filled(groups: impl Iterator<Item = Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        let mut bytes = 0;
        let mut records = Vec::new();
        for group in groups {
            bytes += group.iter().map(|r| Self::bytes(r)).sum::<usize>();
            if bytes > EVENTS_RING_BYTES as usize {
                break;
            }
            records.extend(group);
        }
        records
    }

    /// The records, in order, each as the bytes the ring buffer hands over.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        // SAFETY: the words are plain integers; viewing their bytes as u8 is always valid, and
        // the slice borrows `self.words` for as long as it lives.
        let buf = unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.words.len() * 8)
        };
        let mut at = 0;
        std::iter::from_fn(move || {
            let head = buf.get(at..at + 4)?;
            let len = u32::from_ne_bytes(head.try_into().ok()?) as usize;
            let rec = &buf[at + RING_HDR..at + RING_HDR + len];
            at += RING_HDR + len.next_multiple_of(8);
            Some(rec)
        })
    }
}

struct Streams {
    /// Makes every population pid known (fork from pid 1, then exec).
    warmup: Ring,
    /// The steady-state mix, in a realistic interleaving.
    mixed: Ring,
    /// One stream per kind, for the breakdown (fork/exit come as fork+exit pairs).
    per_kind: Vec<(&'static str, Ring)>,
}

fn streams(creds: &[String]) -> Streams {
    let mut g = Gen { ts: boottime_ns() };
    let pop = |i: usize| FIRST_PID + (i as u32 % POPULATION);
    let exes = [
        "/usr/bin/python3",
        "/usr/bin/curl",
        "/bin/sh",
        "/usr/bin/env",
    ];
    let mut warmup = Vec::new();
    for i in 0..POPULATION as usize {
        warmup.push(g.fork(1, pop(i)));
        let exe = exes[i % exes.len()];
        warmup.push(g.exec(pop(i), exe, &[exe, "-c", "work"]));
    }
    let cred = |i: usize| creds[i % creds.len()].as_str();
    let unregistered = [
        "/root/.aws/credentials",
        "/srv/app/.env",
        "/home/ci/.kube/config",
    ];
    // Holders: the population pids with an even index; each opens the credential of one NHI,
    // always the same, as services do (so each holds one NHI).
    let holders = POPULATION as usize / 2;
    let holder = |i: usize| pop(2 * (i % holders));
    let hcred = |i: usize| cred(i % holders);
    let other = |i: usize| pop(2 * i + 1);
    // Units until the cycle fills the daemon's ring buffer.
    let mixed = Ring::filled((0usize..).map(|u| {
        let churn = FIRST_CHURN_PID + 2 * u as u32;
        vec![
            g.open(holder(u), hcred(u)),
            g.connect(holder(u), [10, (u % 100) as u8, 1, 2], 5432),
            g.fork(other(u), churn),
            g.open(holder(u + 1), hcred(u + 1)),
            g.connect(other(u), [93, 184, 216, 34], 443),
            g.open(other(u), unregistered[u % unregistered.len()]),
            g.exec(
                churn,
                "/usr/bin/curl",
                &["curl", "-s", "https://example.com/"],
            ),
            g.connect(other(u + 1), [140, 82, 112, 3], 22),
            g.open(holder(u + 2), hcred(u + 2)),
            g.fork(other(u + 2), churn + 1),
            g.connect(holder(u + 1), [52, 95, 110, 1], 443),
            g.open(holder(u + 3), hcred(u + 3)),
            g.exec(churn + 1, "/bin/sh", &["sh", "-c", "true"]),
            g.open(
                other(u + 3),
                &format!("/tmp/cache-{u}/nhi-{:02}/token", u % 100),
            ),
            g.connect(churn, [93, 184, 216, 34], 443),
            g.exit(churn),
            g.open(holder(u + 4), hcred(u + 4)),
            g.connect(other(u + 4), [10, 0, 0, 1], 53),
            g.open(other(u + 5), unregistered[(u + 1) % unregistered.len()]),
            g.exit(churn + 1),
        ]
    }));
    let n = KIND_RECORDS;
    let per_kind: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "open_registered",
            (0..n).map(|i| g.open(holder(i), hcred(i))).collect(),
        ),
        (
            "open_unregistered",
            (0..n)
                .map(|i| g.open(other(i), unregistered[i % unregistered.len()]))
                .collect(),
        ),
        (
            "open_false_positive",
            (0..n)
                .map(|i| {
                    g.open(
                        other(i),
                        &format!("/tmp/cache-{i}/nhi-{:02}/token", i % 100),
                    )
                })
                .collect(),
        ),
        (
            "connect_holder",
            (0..n)
                .map(|i| g.connect(holder(i), [10, (i % 100) as u8, 1, 2], 5432))
                .collect(),
        ),
        (
            "connect_other",
            (0..n)
                .map(|i| g.connect(other(i), [93, 184, 216, 34], 443))
                .collect(),
        ),
        (
            // A holder's connections found open at a credential read, to destinations it was
            // judged for already (the steady state: each is looked up in its judged list).
            "connect_existing",
            (0..n)
                .map(|i| g.existing(holder(i), [10, (i % 100) as u8, 1, 2], 5432))
                .collect(),
        ),
        (
            "exec",
            (0..n)
                .map(|i| {
                    g.exec(
                        other(i),
                        "/usr/bin/curl",
                        &["curl", "-s", "https://example.com/"],
                    )
                })
                .collect(),
        ),
        (
            "fork+exit",
            (0..n)
                .flat_map(|i| {
                    let c = FIRST_CHURN_PID + 100_000 + i as u32;
                    [g.fork(other(i), c), g.exit(c)]
                })
                .collect(),
        ),
    ];
    Streams {
        warmup: Ring::new(warmup),
        mixed: Ring::new(mixed),
        per_kind: per_kind
            .into_iter()
            // Fork and exit come in pairs.
            .map(|(k, records)| {
                let group = if k == "fork+exit" { 2 } else { 1 };
                let groups = records.chunks(group).map(<[Vec<u8>]>::to_vec);
                (k, Ring::new(Ring::filled(groups)))
            })
            .collect(),
    }
}

/// Counts of one measured run.
#[derive(Default)]
struct Run {
    records: u64,
    events: u64,
    json_bytes: u64,
    elapsed: Duration,
}

/// Decode, handle and encode every record of `stream`, over and over for `secs` seconds.
fn pump(engine: &mut Engine<ProcHost>, stream: &Ring, secs: f64) -> Run {
    let mut out: Vec<Event> = Vec::with_capacity(64);
    let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
    let mut run = Run::default();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    loop {
        for rec in stream.iter() {
            match decode::decode(rec) {
                Ok(ev) => engine.handle(ev, &mut out),
                Err(e) => panic!("a synthetic record does not decode: {e}"),
            }
            // As the daemon's outputs take them (`Outputs::emit`): written where they are,
            // then dropped.
            for e in &out {
                e.write_json(&mut buf);
                buf.push(b'\n');
                run.events += 1;
            }
            out.clear();
            if buf.len() >= 4 << 20 {
                run.json_bytes += buf.len() as u64;
                buf.clear();
            }
        }
        run.records += stream.len() as u64;
        if start.elapsed() >= limit {
            break;
        }
    }
    run.json_bytes += buf.len() as u64;
    run.elapsed = start.elapsed();
    run
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let a = args();
    if let Some(cpu) = a.cpu {
        pin(cpu);
    }
    let (text, origin) = match &a.registry {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(e) => {
                eprintln!("pipeline_bench: cannot read {}: {e}", p.display());
                std::process::exit(2)
            }
        },
        None => (builtin_registry(), "<builtin>".to_owned()),
    };
    let reg: Registry = match registry::parse(&text, &origin) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pipeline_bench: {e}");
            std::process::exit(2)
        }
    };
    // One literal credential path per NHI (the first pattern without wildcards).
    let creds: Vec<String> = reg
        .nhis
        .iter()
        .filter_map(|n| {
            n.credentials
                .iter()
                .map(|g| g.as_str().to_owned())
                .find(|s| !s.contains(['*', '?', '~']))
        })
        .collect();
    if creds.is_empty() {
        eprintln!("pipeline_bench: the registry has no literal credential path");
        std::process::exit(2)
    }
    let nhis = reg.nhis.len();
    let reg = Arc::new(reg);
    let proc_root =
        std::env::temp_dir().join(format!("nhiscope-pipeline-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&proc_root);
    let new_engine = |s: &Streams| {
        let mut e = Engine::new(
            Arc::clone(&reg),
            &proc_root,
            Clock::now(),
            "bench-host".into(),
        );
        let mut out = Vec::new();
        for rec in s.warmup.iter() {
            if let Ok(ev) = decode::decode(rec) {
                e.handle(ev, &mut out);
            }
        }
        e
    };
    let s = streams(&creds);
    eprintln!(
        "pipeline_bench: {nhis} NHIs, {} known processes, a cycle of {} records; mix per 20: {}",
        POPULATION,
        s.mixed.len(),
        MIX.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Decoding alone.
    let start = Instant::now();
    let mut decoded = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        for rec in s.mixed.iter() {
            if decode::decode(rec).is_ok() {
                decoded += 1;
            }
        }
    }
    let decode_ns = start.elapsed().as_nanos() as f64 / decoded as f64;

    // The mixed stream: a first pass to reach the steady state (holders exist), then measured
    // in rounds. The median round is the figure: a round slowed by other work on the machine
    // (this VM's neighbours) moves it less than it would move one long run.
    let mut engine = new_engine(&s);
    pump(&mut engine, &s.mixed, 0.0);
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut run = Run::default();
    for _ in 0..ROUNDS {
        let r = pump(&mut engine, &s.mixed, a.seconds / ROUNDS as f64);
        rounds.push(r.records as f64 / r.elapsed.as_secs_f64());
        run.records += r.records;
        run.events += r.events;
        run.json_bytes += r.json_bytes;
        run.elapsed += r.elapsed;
    }
    let records_per_s = median(&rounds);
    let secs = run.elapsed.as_secs_f64();
    let events_per_s = records_per_s * run.events as f64 / run.records as f64;
    eprintln!(
        "pipeline_bench: {} records -> {} events ({} JSON bytes) in {secs:.2} s; median of {ROUNDS} rounds {:.0} records/s (rounds {:.0} to {:.0}), {:.0} events/s ({:.0} ns per record)",
        run.records,
        run.events,
        run.json_bytes,
        records_per_s,
        rounds.iter().copied().fold(f64::INFINITY, f64::min),
        rounds.iter().copied().fold(0.0, f64::max),
        events_per_s,
        1e9 / records_per_s
    );

    if a.mixed_only {
        return;
    }

    // Each kind alone, on a fresh engine that knows the population.
    let share = (a.seconds / 10.0).clamp(0.2, 1.0);
    let mut per_kind = Vec::new();
    for (kind, stream) in &s.per_kind {
        let mut e = new_engine(&s);
        // Holders must hold before their connections are measured.
        if *kind == "connect_holder" || *kind == "connect_existing" {
            pump(&mut e, &s.per_kind[0].1, 0.0);
        }
        pump(&mut e, stream, 0.0);
        let r = pump(&mut e, stream, share);
        let ns = r.elapsed.as_nanos() as f64 / r.records as f64;
        let events = r.events as f64 / r.records as f64;
        eprintln!(
            "pipeline_bench:   {kind:<20} {ns:>8.0} ns per record, {events:.2} events per record"
        );
        per_kind.push(serde_json::json!({
            "kind": kind, "ns_per_record": ns, "events_per_record": events,
        }));
    }

    // JSON encoding alone, of the events one mixed cycle produces.
    let mut e = new_engine(&s);
    let mut events = Vec::new();
    for rec in s.mixed.iter() {
        if let Ok(ev) = decode::decode(rec) {
            e.handle(ev, &mut events);
        }
    }
    // Each line written into one buffer used again, as the daemon's outputs write them
    // (`Outputs::emit`), in rounds; the median round is the figure.
    let mut line = Vec::with_capacity(4096);
    let mut json_rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut encoded = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            for ev in &events {
                line.clear();
                ev.write_json(&mut line);
                std::hint::black_box(&line);
                encoded += 1;
            }
        }
        json_rounds.push(start.elapsed().as_nanos() as f64 / encoded.max(1) as f64);
    }
    let json_ns = median(&json_rounds);
    eprintln!("pipeline_bench:   decode alone {decode_ns:.0} ns per record; JSON alone {json_ns:.0} ns per event");
    let _ = std::fs::remove_dir_all(&proc_root);

    println!(
        "{}",
        serde_json::json!({
            "records_per_s": records_per_s,
            "events_per_s": events_per_s,
            "records": run.records,
            "events": run.events,
            "seconds": secs,
            "json_bytes_per_event": run.json_bytes as f64 / run.events.max(1) as f64,
            "nhis": nhis,
            "population": POPULATION,
            "mix_per_20_records": MIX.iter().map(|(k, n)| (k.to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "per_kind": per_kind,
            "decode_ns_per_record": decode_ns,
            "json_ns_per_event": json_ns,
            "rounds_records_per_s": rounds,
            "rounds_json_ns_per_event": json_rounds,
        })
    );
}
