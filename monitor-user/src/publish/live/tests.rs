use std::{
    io::{BufRead as _, BufReader as StdBufReader, Read as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{protocol::Message, *};
use crate::domain::event::{DriftKind, Event, Kind, Verdict};

const WAIT: Duration = Duration::from_secs(5);

/// A fresh directory of its own under /tmp (short: a socket path has at most 107 bytes).
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new("/tmp/nhiscope-live").join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions("/tmp/nhiscope-live", std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn registry() -> Registry {
    crate::domain::registry::parse(
        "nhis:\n  - id: billing\n    owner: team-billing\n    credentials: [/etc/billing/key]\n    \
         readers:\n      uid: [0]\n    endpoints:\n      - cidr: 10.20.0.0/16\n        ports: [5432, 6432]\n      \
         - host: \"*.s3.amazonaws.com\"\n        port: 443\n",
        "<test>",
    )
    .unwrap()
}

fn drift_event(n: u32, reason_len: usize) -> Event {
    let mut e = Event::new(
        Kind::Connect,
        crate::domain::event::Ts::parse_rfc3339("2026-11-23T10:00:00.000000001Z").unwrap(),
        "web-1".into(),
    );
    e.pid = n;
    e.exe = "/usr/bin/python3".into();
    e.daddr = Some([127, 0, 0, 9].into());
    e.dport = Some(443);
    e.nhi = Some("billing".into());
    e.verdict = Verdict::Drift;
    e.drift = vec![DriftKind::EndpointOutOfScope];
    e.reason = "x".repeat(reason_len);
    e
}

async fn read_message(lines: &mut tokio::io::Lines<BufReader<UnixStream>>) -> Message {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a message within the timeout")
        .expect("read")
        .expect("a line, not EOF");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_gets_hello_then_events_registry_and_health() {
    let path = temp_dir("hello").join("live.sock");
    let server = Server::bind(&path).unwrap();
    server.set_host("web-1");
    server.set_registry(&registry());
    server.publish(&drift_event(1, 10)); // before any client: counted, not sent

    let stream = UnixStream::connect(&path).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let Message::Hello(hello) = read_message(&mut lines).await else {
        panic!("hello first")
    };
    assert_eq!(hello.version, 1);
    assert_eq!(hello.host, "web-1");
    assert_eq!(hello.pid, std::process::id());
    assert_eq!(hello.health.events_total, 1);
    let nhi = &hello.registry.nhis[0];
    assert_eq!(nhi.id, "billing");
    assert_eq!(nhi.owner.as_deref(), Some("team-billing"));
    assert_eq!(nhi.credentials, ["/etc/billing/key"]);
    assert_eq!(nhi.readers.as_ref().unwrap().uid, [0]);
    assert_eq!(
        nhi.endpoints.as_deref().unwrap(),
        [
            "10.20.0.0/16 ports 5432,6432",
            "*.s3.amazonaws.com port 443"
        ]
    );
    assert_eq!(nhi.interactive, "deny");
    wait_until("the client is registered", || server.clients() == 1).await;

    server.publish(&drift_event(42, 10));
    let Message::Event { event } = read_message(&mut lines).await else {
        panic!("an event")
    };
    assert_eq!(event.pid, 42);
    assert_eq!(event.kind, Kind::Connect);
    assert_eq!(event.verdict, Verdict::Drift);
    assert_eq!(event.drift, [DriftKind::EndpointOutOfScope]);
    assert_eq!(event.destination().as_deref(), Some("127.0.0.9:443"));

    server.set_registry(&crate::domain::registry::Registry::default());
    let Message::Registry { registry } = read_message(&mut lines).await else {
        panic!("the new registry")
    };
    assert!(registry.nhis.is_empty());

    let mut drops = std::collections::BTreeMap::new();
    drops.insert("ringbuf_full_open".to_owned(), 3);
    server.set_health(Health {
        kernel_drops: 3,
        kernel_drops_by_cause: drops,
        ..Health::default()
    });
    let Message::Health { health } = read_message(&mut lines).await else {
        panic!("health")
    };
    assert_eq!(health.kernel_drops, 3);
    assert_eq!(health.kernel_drops_by_cause["ringbuf_full_open"], 3);
    assert_eq!(health.events_total, 2);
    assert_eq!(health.live_clients, 1);
    assert_eq!(health.clickhouse, None);
}

#[tokio::test]
async fn the_socket_is_0600_replaces_a_stale_one_and_is_removed_on_drop() {
    let path = temp_dir("mode").join("sub/live.sock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A daemon killed with SIGKILL leaves its socket file behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(UnixStream::connect(&path).await.is_ok());
    drop(server);
    assert!(!path.exists(), "the socket is removed on drop");
}

#[tokio::test]
async fn a_socket_in_use_or_a_file_in_the_way_is_left_alone() {
    let dir = temp_dir("inuse");
    let path = dir.join("live.sock");
    let _first = Server::bind(&path).unwrap();
    let err = Server::bind(&path)
        .err()
        .expect("a second daemon cannot take it");
    assert!(matches!(err, LiveError::InUse(_)), "{err}");
    assert!(err.to_string().contains("another nhiscope daemon"), "{err}");
    assert!(UnixStream::connect(&path).await.is_ok(), "still served");

    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let err = Server::bind(&file).err().expect("not a socket");
    assert!(matches!(err, LiveError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn binding_needs_a_runtime() {
    let path = temp_dir("nort").join("live.sock");
    assert!(matches!(Server::bind(&path), Err(LiveError::NoRuntime)));
}

/// Whether this test may switch users (root); in CI (`NHISCOPE_REQUIRE_BPF=1`) it must.
fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("NHISCOPE_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "NHISCOPE_REQUIRE_BPF=1 but this test needs root to run a client as another uid"
    );
    eprintln!("skipping: not root (the test runs a client as uid 65534)");
    false
}

/// Connects to `path` as uid 65534 and returns what the server sent, or the connect error.
fn connect_as_nobody(path: &Path) -> String {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({:?})\nexcept OSError as e:\n  \
         print('connect failed:', e.strerror)\n  raise SystemExit\ns.settimeout(5)\nb=b''\nwhile True:\n  \
         c=s.recv(4096)\n  if not c: break\n  b+=c\nprint(b.decode())\n",
        path.to_str().unwrap()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &code])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run python3 as uid 65534");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_uid_is_refused() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("peer");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("live.sock");
    let server = Server::bind(&path).unwrap();

    // The mode keeps other users out before the daemon even sees them.
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || connect_as_nobody(&p))
        .await
        .unwrap();
    assert!(out.contains("connect failed: Permission denied"), "{out}");
    assert_eq!(server.refused(), 0);

    // With the mode widened by hand, the peer check still refuses, and says why.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || connect_as_nobody(&p))
        .await
        .unwrap();
    let msg: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(msg["type"], "error", "{out}");
    let text = msg["message"].as_str().unwrap();
    assert!(text.contains("uid 65534"), "{text}");
    assert!(
        !out.contains("hello"),
        "a refused peer gets nothing else: {out}"
    );
    assert_eq!(server.refused(), 1);
    assert_eq!(server.clients(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_dropped_without_blocking_the_daemon() {
    const LIMIT: usize = 4 << 20;
    const BATCHES: u32 = 200;
    const PER_BATCH: u32 = 100;
    let path = temp_dir("slow").join("live.sock");
    let server = Server::bind_with_limit(&path, LIMIT).unwrap();

    // A client that never reads.
    let mut slow = std::os::unix::net::UnixStream::connect(&path).unwrap();
    // A client that keeps up, counting events.
    let fast = UnixStream::connect(&path).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(fast).lines();
        let mut events = 0u32;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(r#"{"type":"event""#) {
                events += 1;
                if events == BATCHES * PER_BATCH {
                    break;
                }
            }
        }
        events
    });
    wait_until("both clients are registered", || server.clients() == 2).await;

    let mut slowest = Duration::ZERO;
    for b in 0..BATCHES {
        let started = Instant::now();
        for i in 0..PER_BATCH {
            server.publish(&drift_event(b * PER_BATCH + i, 200));
        }
        slowest = slowest.max(started.elapsed());
        // The daemon goes back to its loop between two drains of the ring buffer.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a batch of {PER_BATCH} publishes took {slowest:?}"
    );
    assert_eq!(server.dropped(), 1, "the slow client is dropped");
    assert_eq!(server.clients(), 1, "the fast one stays");
    let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(got, BATCHES * PER_BATCH, "the fast client got every event");

    // The slow client finds its connection closed once it reads what was already sent.
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("EOF, not a timeout");
    let first = StdBufReader::new(&rest[..])
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.starts_with(r#"{"type":"hello""#), "{first}");
}

#[tokio::test]
async fn a_disabled_server_takes_everything_and_sends_nothing() {
    let server = Server::disabled();
    server.set_registry(&registry());
    server.publish(&drift_event(1, 10));
    server.set_health(Health::default());
    assert_eq!(server.clients(), 0);
    assert_eq!(server.path(), Path::new(""));
}
