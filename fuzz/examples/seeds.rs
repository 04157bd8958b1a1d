//! Writes the seed corpora that can be made from the code itself into `fuzz/seeds/`: the
//! registry fixtures, config files, ring-buffer records made with `nhiscope::domain::decode::encode`,
//! and the live feed's lines as the daemon writes them for those records. The DNS seeds are
//! packets captured from dnsmasq (`examples/dns_seeds.py`).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`; the seeds are committed, so this
//! is only rerun when a record or a message changes shape.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use monitor_common::{
    ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, OpenEvent, OpenOp,
    AF_INET, AF_INET6, COMM_LEN, EXE_NAMES_COMPLETE, HDR_TTY, HDR_TTY_KNOWN, NAMES_COMPLETE,
    STDOUT_PIPE,
};
use nhiscope::{
    domain::decode::{encode, KernelEvent},
    domain::engine::{Clock, Engine},
    domain::registry,
    publish::live::{Health, RegistrySummary},
};
use nhiscope_fuzz::decode::bytes_of;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().ok_or("no workspace root")?;
    let seeds = fuzz.join("seeds");

    let dir = mkdir(&seeds.join("registry"))?;
    let mut fixtures: Vec<PathBuf> = fs::read_dir(root.join("tests/fixtures/registry"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    fixtures.push(root.join("examples/registry.yaml"));
    for path in fixtures {
        let name = path.file_name().ok_or("a fixture without a name")?;
        fs::copy(&path, dir.join(name))?;
    }
    write(&dir, "offset-expires.yaml", EXPIRES)?;

    let dir = mkdir(&seeds.join("store_config"))?;
    write(&dir, "full.yaml", CONFIG_FULL)?;
    write(&dir, "url-only.yaml", "url: http://127.0.0.1:8123\n")?;
    write(&dir, "bad-duration.yaml", CONFIG_BAD_DURATION)?;

    let dir = mkdir(&seeds.join("daemon_config"))?;
    fs::copy(root.join("examples/daemon.yaml"), dir.join("example.yaml"))?;
    write(&dir, "inline-clickhouse.yaml", DAEMON_INLINE_CLICKHOUSE)?;
    write(&dir, "every-error.yaml", DAEMON_EVERY_ERROR)?;

    let dir = mkdir(&seeds.join("decode"))?;
    let sessions = sessions();
    for (name, records) in &sessions {
        write(&dir, name, records.concat())?;
    }

    let dir = mkdir(&seeds.join("live_protocol"))?;
    let reg = registry::parse(
        include_str!("../../examples/registry.yaml"),
        "examples/registry.yaml",
    )?;
    let summary = RegistrySummary::from(&reg);
    let health = Health {
        uptime_secs: 63,
        events_total: 12,
        events_per_sec: 1.5,
        ringbuf_fill: Some(0.25),
        ringbuf_bytes: Some(1 << 22),
        unseen: vec!["io_uring opens by name are not seen".into()],
        ..Health::default()
    };
    let hello = serde_json::json!({
        "type": "hello", "version": 1, "host": "web-1", "pid": 812,
        "registry": summary, "health": health,
    });
    let mut lines = vec![hello.to_string()];
    let proc_root = std::env::temp_dir().join(format!("nhiscope-seeds-{}", std::process::id()));
    fs::create_dir_all(&proc_root)?;
    let mut engine = Engine::new(
        Arc::new(reg),
        &proc_root,
        Clock::with_offset(0),
        "web-1".into(),
    );
    let mut events = Vec::new();
    for (_, records) in &sessions {
        for r in records {
            engine.handle(nhiscope::domain::decode::decode(r)?, &mut events);
        }
    }
    for e in &events {
        lines.push(serde_json::json!({"type": "event", "event": e}).to_string());
    }
    lines.push(serde_json::json!({"type": "health", "health": health}).to_string());
    lines.push(serde_json::json!({"type": "registry", "registry": summary}).to_string());
    lines.push(r#"{"type":"error","message":"peer refused"}"#.to_owned());
    write(&dir, "session.jsonl", (lines.join("\n") + "\n").as_bytes())?;
    write(
        &dir,
        "garbled.jsonl",
        b"{\"type\":\"hello\"\nnot json\n{}\n",
    )?;
    eprintln!(
        "seeds: {} records, {} events, in {}",
        sessions.iter().map(|(_, r)| r.len()).sum::<usize>(),
        events.len(),
        seeds.display()
    );
    let _ = fs::remove_dir_all(&proc_root);
    Ok(())
}

fn mkdir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
    Ok(fs::write(dir.join(name), bytes)?)
}

const EXPIRES: &str = "nhis:\n  - id: late\n    holders: {uid: [0]}\n    expires: 2026-12-31T23:59:59-05:30\n    max_age: 7days\n";

/// A daemon config with every key set and ClickHouse inline.
const DAEMON_INLINE_CLICKHOUSE: &str = "registry: registry.yaml
json: /var/log/nhiscope/events.jsonl
json_max_size: 100M
json_keep: 5
ringbuf_size: 8388608
hostname: web-1
live_socket: /run/nhiscope/live.sock
metrics: 127.0.0.1:9464
log_level: info,nhiscope::publish::store=debug
log_format: json
cmdline: argv0
user: nhiscope
clickhouse:
  url: https://ch.example:8443
  password_file: /etc/nhiscope/clickhouse.password
  batch_interval: 500ms
  spool_dir: spool
";

/// A daemon config with one error per entry, and one inside `clickhouse:`.
const DAEMON_EVERY_ERROR: &str = "registry: ''
ringbuf_size: 65535
metrics: localhost:9464
ring: 1
clickhouse:
  url: ftp://ch:21
  colour: blue
json_keep: 0
";

const CONFIG_FULL: &str = "url: http://127.0.0.1:8123
database: nhiscope
user: nhiscope
password_file: /etc/nhiscope/clickhouse.password
cluster: fleet
retention_days: 90
spool_dir: /var/lib/nhiscope/spool
spool_max_bytes: 1073741824
batch_rows: 100000
batch_interval: 500ms
compression: lz4
request_timeout: 10s
retry_max: 30s
";

const CONFIG_BAD_DURATION: &str = "url: http://ch:8123/\nbatch_interval: soon\n";

/// Records of a few process lives, each a list of records in kernel order.
fn sessions() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let reader = 2001;
    let holder = 2002;
    vec![
        (
            "one-of-each",
            vec![
                bytes_of(&KernelEvent::Exec(
                    exec(
                        reader,
                        1001,
                        "/usr/local/bin/billing-worker",
                        &["billing-worker", "--once"],
                    )
                    .into(),
                )),
                encode(&open(
                    reader,
                    1001,
                    "/etc/nhiscope-example/billing/aws-credentials",
                    3,
                )),
                encode(&ForkEvent {
                    hdr: hdr(EventKind::Fork, reader, 1001, "billing-worker"),
                    child_tid: reader + 1,
                    _pad: 0,
                }),
                encode(&connect(reader, 1001, AF_INET, &[52, 218, 1, 1], 443)),
                encode(&ExitEvent {
                    hdr: hdr(EventKind::Exit, reader, 1001, "billing-worker"),
                }),
            ],
        ),
        (
            "drift",
            vec![
                encode(&exec(reader, 0, "/usr/bin/cat", &["cat", "db-password"])),
                encode(&open(
                    reader,
                    0,
                    "/etc/nhiscope-example/orders/db-password",
                    3,
                )),
                encode(&open(reader, 0, "/home/ann/.aws/credentials", -13)),
            ],
        ),
        (
            "holder-v6",
            vec![
                encode(&exec(
                    holder,
                    0,
                    "/opt/metrics/bin/pusher",
                    &["pusher", "--token=hunter2hunter2"],
                )),
                encode(&connect(
                    holder,
                    0,
                    AF_INET6,
                    &[0xfd, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    5432,
                )),
            ],
        ),
    ]
}

fn hdr(kind: EventKind, pid: u32, uid: u32, comm: &str) -> EventHeader {
    let mut c = [0u8; COMM_LEN];
    let n = comm.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&comm.as_bytes()[..n]);
    EventHeader {
        kind: kind as u32,
        pid,
        tid: pid,
        uid,
        gid: uid,
        flags: HDR_TTY_KNOWN | HDR_TTY,
        ts_ns: 1_750_000_000_000_000_000,
        cgroup_id: 0,
        comm: c,
    }
}

/// A zeroed record: every record is plain data, for which all-zero bytes are a valid value.
fn zeroed<T: Copy>() -> T {
    let bytes = vec![0u8; std::mem::size_of::<T>()];
    // SAFETY: T is one of monitor_common's repr(C) plain-data records (all-zero is valid); the
    // buffer is exactly its size and read_unaligned needs no alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// The kernel's walk of `path`: its components leaf first, each NUL-terminated.
fn names(path: &str, buf: &mut [u8]) -> u32 {
    let mut at = 0;
    for c in path.rsplit('/').filter(|c| !c.is_empty()) {
        buf[at..at + c.len()].copy_from_slice(c.as_bytes());
        at += c.len() + 1;
    }
    at as u32
}

fn exec(pid: u32, uid: u32, exe: &str, argv: &[&str]) -> ExecEvent {
    let mut e: ExecEvent = zeroed();
    e.hdr = hdr(
        EventKind::Exec,
        pid,
        uid,
        exe.rsplit('/').next().unwrap_or(exe),
    );
    e.old_tid = pid;
    e.filename[..exe.len()].copy_from_slice(exe.as_bytes());
    e.filename_len = exe.len() as u32;
    e.exe_names_len = names(exe, &mut e.exe_names);
    e.flags = EXE_NAMES_COMPLETE;
    let args = argv.join("\0") + "\0";
    e.args[..args.len()].copy_from_slice(args.as_bytes());
    e.args_len = args.len() as u32;
    e.argc = argv.len() as u32;
    e
}

fn open(pid: u32, uid: u32, path: &str, ret: i64) -> OpenEvent {
    let mut o: OpenEvent = zeroed();
    o.hdr = hdr(EventKind::Open, pid, uid, "reader");
    o.op = OpenOp::Openat as u32;
    o.dfd = -100;
    o.ret = ret;
    o.path[..path.len()].copy_from_slice(path.as_bytes());
    o.path_len = path.len() as u32;
    if ret >= 0 {
        o.names_len = names(path, &mut o.names);
        o.flags = NAMES_COMPLETE | STDOUT_PIPE;
        o.stdout_ino = 4242;
        o.ino = 77;
        o.dev = 0x801;
    }
    o
}

fn connect(pid: u32, uid: u32, family: u16, addr: &[u8], port: u16) -> ConnectEvent {
    let mut c: ConnectEvent = zeroed();
    c.hdr = hdr(EventKind::Connect, pid, uid, "client");
    c.family = family;
    c.dport = port;
    c.sport = 40_000;
    c.proto = monitor_common::IPPROTO_TCP;
    c.daddr[..addr.len()].copy_from_slice(addr);
    c
}
