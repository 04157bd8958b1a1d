//! Canary tests: a secret a process put in its command line (in an option, in a URL, in an
//! environment-style argument) never leaves the daemon. Kernel records are built by hand and go
//! through the engine; the events it makes are then written as every output writes them (JSON
//! line, live-feed message, ClickHouse row, spool file, log line) and searched for the secret.

use std::{path::PathBuf, sync::Arc};

use monitor_common::{
    ConnectEvent, EventHeader, EventKind, ExecEvent, AF_INET, ARGS_CAP, COMM_LEN, PATH_CAP,
};

use crate::sense::proc_host::ProcHost;
use crate::{
    domain::decode::KernelEvent,
    domain::engine::{Clock, Engine},
    domain::event::{Event, Kind},
    domain::redact::CmdlineMode,
    publish::store::{
        row::EventRow,
        sink::{Batch, Rows},
        spool::Spool,
    },
};

/// The secret; each place it is put gets a suffix, so a leak says which rule missed it.
const CANARY: &str = "CanaryQ7zX";

const REG: &str = "nhis:\n  - id: deploy\n    credentials: [/srv/deploy/token]\n    holders:\n      exe: [/usr/bin/curl]\n    endpoints:\n      - cidr: 10.0.0.0/8\n        port: 443\n    interactive: allow\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nhiscope-canary-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn engine(name: &str, mode: CmdlineMode) -> Engine<ProcHost> {
    let reg = crate::domain::registry::parse(REG, "test.yaml").expect("registry");
    let mut e = Engine::new(
        Arc::new(reg),
        scratch(name),
        Clock::with_offset(0),
        "h".into(),
    );
    e.set_cmdline_mode(mode);
    e
}

fn zeroed<T: Copy>() -> T {
    let bytes = vec![0u8; std::mem::size_of::<T>()];
    // SAFETY: the monitor_common records are plain data; all-zero is a valid value.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn hdr(kind: EventKind, pid: u32, comm: &str) -> EventHeader {
    let mut c = [0u8; COMM_LEN];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    EventHeader {
        kind: kind as u32,
        pid,
        tid: pid,
        uid: 1000,
        gid: 1000,
        flags: monitor_common::HDR_TTY_KNOWN,
        ts_ns: 1_700_000_000_000_000_000,
        cgroup_id: 0,
        comm: c,
    }
}

fn exec(pid: u32, exe: &str, argv: &[String]) -> KernelEvent<'static> {
    let mut e: ExecEvent = zeroed();
    e.hdr = hdr(EventKind::Exec, pid, "curl");
    e.old_tid = pid;
    e.filename[..exe.len()].copy_from_slice(exe.as_bytes());
    e.filename_len = exe.len() as u32;
    let mut at = 0;
    for a in argv {
        e.args[at..at + a.len()].copy_from_slice(a.as_bytes());
        at += a.len() + 1;
    }
    assert!(at <= ARGS_CAP && exe.len() < PATH_CAP);
    e.args_len = at as u32;
    e.argc = argv.len() as u32;
    KernelEvent::Exec(e.into())
}

fn connect(pid: u32) -> KernelEvent<'static> {
    let mut c: ConnectEvent = zeroed();
    c.hdr = hdr(EventKind::Connect, pid, "curl");
    c.family = AF_INET;
    c.dport = 443;
    c.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
    KernelEvent::Connect(c)
}

fn exit(pid: u32) -> KernelEvent<'static> {
    KernelEvent::Exit(monitor_common::ExitEvent {
        hdr: hdr(EventKind::Exit, pid, "curl"),
    })
}

/// The argv of a holder with the canary in an option, a URL and an environment-style argument.
fn argv() -> Vec<String> {
    [
        "curl".to_owned(),
        "-sf".to_owned(),
        "-H".to_owned(),
        format!("Authorization: Bearer {CANARY}opt"),
        format!("https://deploy:{CANARY}url@10.1.2.3/v1/push?token={CANARY}query"),
        format!("DEPLOY_API_KEY={CANARY}env"),
    ]
    .to_vec()
}

/// The events of a holder's exec, connect and exit.
fn events(e: &mut Engine<ProcHost>) -> Vec<Event> {
    let mut out = Vec::new();
    e.handle(exec(4242, "/usr/bin/curl", &argv()), &mut out);
    e.handle(connect(4242), &mut out);
    e.handle(exit(4242), &mut out);
    let kinds: Vec<Kind> = out.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        vec![Kind::Exec, Kind::Connect, Kind::Exit],
        "{out:?}"
    );
    out
}

/// Every rendering of `ev` an output makes, by output name.
fn outputs(ev: &Event, spool_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let json = ev.to_json();
    let live = crate::publish::live::protocol::event_line(json.as_bytes());
    let row = EventRow::from_event(ev, 1, 1);
    let row_json = serde_json::to_string(&row).expect("row");
    let row_debug = format!("{row:?}");
    let mut spool = Spool::open(spool_dir, 1 << 20).expect("spool");
    spool
        .push(&Batch::new("h", 1, Rows::Events(vec![row])))
        .expect("spooled");
    let mut spooled = String::new();
    for f in walk(spool_dir) {
        spooled.push_str(&String::from_utf8_lossy(
            &std::fs::read(f).expect("spool file"),
        ));
    }
    vec![
        ("json", json),
        ("live", String::from_utf8_lossy(&live).into_owned()),
        ("clickhouse row", row_json),
        ("clickhouse row (debug)", row_debug),
        ("spool", spooled),
        ("log", format!("{ev:?}")),
    ]
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn no_output_carries_a_secret_from_a_command_line() {
    let mut e = engine("redacted", CmdlineMode::default());
    let spool_dir = scratch("redacted-spool");
    for ev in events(&mut e) {
        assert_eq!(ev.cmdline.first().map(String::as_str), Some("curl"));
        assert_eq!(ev.cmdline.len(), argv().len(), "{:?}", ev.cmdline);
        for (output, text) in outputs(&ev, &spool_dir) {
            assert!(
                !text.contains(CANARY),
                "the canary reached the {output} of a {:?} event: {text}",
                ev.kind
            );
        }
        // What an analyst needs stays: the program, the header's name, the host.
        let kept = ev.cmdline.join(" ");
        assert!(kept.contains("Authorization: ***"), "{kept}");
        assert!(
            kept.contains("https://deploy:***@10.1.2.3/v1/push"),
            "{kept}"
        );
        assert!(kept.contains("DEPLOY_API_KEY=***"), "{kept}");
    }
    let _ = std::fs::remove_dir_all(spool_dir);
}

#[test]
fn argv0_keeps_the_program_only() {
    let mut e = engine("argv0", CmdlineMode::Argv0);
    for ev in events(&mut e) {
        assert_eq!(ev.cmdline, vec!["curl"]);
    }
}

#[test]
fn full_keeps_everything_when_asked() {
    // The canary test above can fail: with redaction off, the secret is there.
    let mut e = engine("full", CmdlineMode::Full);
    let spool_dir = scratch("full-spool");
    let evs = events(&mut e);
    let leaked = outputs(&evs[0], &spool_dir)
        .into_iter()
        .filter(|(_, text)| text.contains(CANARY))
        .count();
    assert_eq!(leaked, 6);
    let _ = std::fs::remove_dir_all(spool_dir);
}
