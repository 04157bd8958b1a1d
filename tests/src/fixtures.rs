//! Events for tests and benchmarks of the store: varied, numbered, recognisable.

use std::time::Duration;

use nhiscope::domain::event::{DriftKind, Event, Kind, OpenOp, Proto, Ts, Verdict};

/// When the fixture events start: [`event`]`(_, 0)` is at this Unix second (2026-11-18).
pub const FIXTURE_BASE_SECS: u64 = 1_795_000_000;

/// A window back from now that holds every fixture event, whenever the tests run: whole days.
pub fn days_back_to_fixtures() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_sub(FIXTURE_BASE_SECS) / 86_400 + 2
}

/// One varied event per `i`: opens (ok, drift, failed), connects (IPv4, IPv6), execs, exits;
/// `i` also goes into `pid` and the path so that each is recognisable.
pub fn event(host: &str, i: u64) -> Event {
    let base = FIXTURE_BASE_SECS;
    let t =
        std::time::UNIX_EPOCH + Duration::new(base + i / 1000, (i % 1000) as u32 * 1_000_000 + 7);
    let ts = Ts::from_system(t);
    let kind = match i % 5 {
        0 | 1 => Kind::Open,
        2 => Kind::Connect,
        3 => Kind::Exec,
        _ => Kind::Exit,
    };
    let mut e = Event::new(kind, ts, host.into());
    e.pid = i as u32;
    e.tid = i as u32 + 1;
    e.ppid = 1;
    e.uid = 1000 + (i % 3) as u32;
    e.gid = 100;
    e.exe = "/usr/bin/python3.11".into();
    e.comm = "python3".into();
    e.cmdline = vec![
        "python3".into(),
        format!("job-{i}.py"),
        "--flag=été ✓".into(),
    ]
    .into();
    e.cgroup_id = 4242 + i;
    // Every third one runs a script (the interpreter is `exe`).
    if i.is_multiple_of(3) {
        e.script = Some(format!("/opt/jobs/job-{i}.py"));
    }
    // Every fourth one runs in a Kubernetes pod.
    if i.is_multiple_of(4) {
        e.container = Some(format!("{:064x}", 0xc0ffee + i));
        e.pod_uid = Some(format!("0f2a4c1e-6b7d-4e8f-9a0b-{:012x}", i % 7));
        e.pod = Some(format!("billing-worker-{}", i % 7));
        e.pod_namespace = Some("payments".into());
        e.container_name = Some("worker".into());
    }
    match kind {
        Kind::Open => {
            e.syscall = Some(OpenOp::Openat);
            e.path = Some(format!("/etc/billing/aws-credentials-{i}"));
            e.path_arg = Some("aws-credentials".into());
            e.flags = Some(if i.is_multiple_of(2) { 0 } else { 0o2 | 0o100 });
            if i.is_multiple_of(7) {
                e.result = Some(-13);
                e.error = Some("EACCES".into());
            } else {
                e.result = Some(3);
            }
            e.nhi = Some("billing-s3-writer".into());
            if i.is_multiple_of(4) {
                e.verdict = Verdict::Drift;
                e.drift = vec![DriftKind::ReaderOutOfScope, DriftKind::InteractiveUse];
                e.reason = "opened by /usr/bin/python3.11, outside `readers`".into();
            }
        }
        Kind::Connect => {
            if i.is_multiple_of(2) {
                e.daddr = Some([10, 20, 1, 7].into());
                e.saddr = Some([10, 20, 0, 2].into());
            } else {
                e.daddr = Some("2001:db8::17".parse().expect("address"));
                e.saddr = Some(std::net::Ipv6Addr::LOCALHOST.into());
            }
            e.dport = Some(443);
            e.sport = Some(40_000 + (i % 1000) as u16);
            e.proto = Some(if i.is_multiple_of(4) {
                Proto::Udp
            } else {
                Proto::Tcp
            });
            e.dns_names = Some(if i.is_multiple_of(3) {
                vec![]
            } else {
                vec!["bucket.s3.eu-west-1.amazonaws.com".into()]
            });
            e.nhi = Some("billing-s3-writer".into());
            e.container = Some("3f2a9c".into());
        }
        _ => {}
    }
    e
}

pub fn events(host: &str, range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(|i| event(host, i)).collect()
}

/// One `request` event per `i`, at the times of [`event`]: even `i` a TLS ClientHello (server
/// name, ALPN, version; an odd one of them without ALPN), odd `i` a plaintext HTTP request line
/// (method, host, path), every third one drifting (`api_out_of_scope`, and `name_mismatch` for
/// TLS); `i` goes into `pid` and the path.
pub fn request_event(host: &str, i: u64) -> Event {
    let mut e = event(host, i);
    let mut r = Event::new(Kind::Request, e.ts, host.into());
    r.pid = e.pid;
    r.tid = e.tid;
    r.ppid = e.ppid;
    r.uid = e.uid;
    r.gid = e.gid;
    r.exe = std::mem::take(&mut e.exe);
    r.comm = std::mem::take(&mut e.comm);
    r.cmdline = std::mem::take(&mut e.cmdline);
    r.cgroup_id = e.cgroup_id;
    r.proto = Some(Proto::Tcp);
    r.daddr = Some([10, 20, 1, 7].into());
    r.dport = Some(if i.is_multiple_of(2) { 443 } else { 80 });
    r.saddr = Some([10, 20, 0, 2].into());
    r.sport = Some(40_000 + (i % 1000) as u16);
    r.dns_names = Some(vec!["bucket.s3.eu-west-1.amazonaws.com".into()]);
    r.nhi = Some("billing-s3-writer".into());
    let drift = i.is_multiple_of(3);
    if i.is_multiple_of(2) {
        r.wire.sni = Some(if drift {
            "api.github.com".into()
        } else {
            "bucket.s3.eu-west-1.amazonaws.com".into()
        });
        if !i.is_multiple_of(4) {
            r.wire.alpn = Some(vec!["h2".into(), "http/1.1".into()]);
        }
        r.wire.tls_version = Some("1.3".into());
        if drift {
            r.drift = vec![DriftKind::ApiOutOfScope, DriftKind::NameMismatch];
        }
    } else {
        r.wire.http_method = Some(if drift { "DELETE" } else { "PUT" }.into());
        r.wire.http_host = Some("bucket.s3.eu-west-1.amazonaws.com".into());
        r.wire.http_path = Some(format!("/uploads/report-{i}.csv"));
        if drift {
            r.drift = vec![DriftKind::ApiOutOfScope];
        }
    }
    if drift {
        r.verdict = Verdict::Drift;
        r.reason = "a request outside the endpoint's declared API".into();
    }
    r
}

pub fn request_events(host: &str, range: std::ops::Range<u64>) -> Vec<Event> {
    range.map(|i| request_event(host, i)).collect()
}

/// User + system CPU seconds of process `pid` (or `self`) so far.
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime), counted from the state (field 3) at index 0.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
