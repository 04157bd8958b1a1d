//! End to end: the real `nhiscope tui` in a real terminal (tmux), read back with `capture-pane`
//! as an analyst would see it. As root, with the real daemon and its probes, a real process
//! drifts and the dashboard must show it within a few seconds; without a daemon, it must say so.
//! Either way `q` or Ctrl-C must leave the shell as it was.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use nhiscope::{
    domain::event::{DriftKind, Event, Kind, Ts, Verdict},
    publish::store::{Store, StoreConfig},
};
use nhiscope_tests::{
    clickhouse::ClickHouse,
    nhiscope_bin,
    procs::{connect_code, run, PYTHON},
    require_root_bpf, temp_dir,
    tls::{Pki, TlsClickHouse},
    Daemon,
};

/// How soon what happened must be on screen.
const SHOWN: Duration = Duration::from_secs(5);
/// How long the dashboard may take to start and connect.
const STARTED: Duration = Duration::from_secs(15);
/// Printed by the shell once the dashboard exits, with its exit code.
const EXITED: &str = "nhiscope-tui-exited-";

/// Whether tmux is here; in CI (`NHISCOPE_REQUIRE_BPF=1`, after `cargo xtask setup` installed
/// it) it must be.
fn require_tmux() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("NHISCOPE_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "NHISCOPE_REQUIRE_BPF=1 but tmux is missing (`cargo xtask setup` installs it)"
    );
    eprintln!("skipping: tmux is not installed");
    false
}

/// A tmux server of our own (`-L`, so a developer's sessions are untouched) with one shell in a
/// terminal of a fixed size. Killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    #[track_caller]
    fn start(width: u16, height: u16) -> Tmux {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmux = Tmux {
            server: format!("nhiscope-test-{}-{n}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.ok(&["new-session", "-d", "-s", "t", "-x", &w, "-y", &h, "sh"]);
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .env_remove("TMUX")
            .env("PS1", "$ ")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux: {e}"))
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Types `text` and Enter into the shell.
    #[track_caller]
    fn type_line(&self, text: &str) {
        self.ok(&["send-keys", "-t", "t", "-l", text]);
        self.ok(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Presses keys by tmux's names (`q`, `Enter`, `C-c`, `2`).
    #[track_caller]
    fn press(&self, key: &str) {
        self.ok(&["send-keys", "-t", "t", key]);
    }

    /// The screen as text.
    #[track_caller]
    fn screen(&self) -> String {
        let o = self.cmd(&["capture-pane", "-p", "-t", "t"]);
        assert!(o.status.success(), "capture-pane: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The screen once `pred` holds on it; panics after `timeout` with the screen and `context`.
    #[track_caller]
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        context: impl Fn() -> String,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if started.elapsed() > timeout {
                panic!(
                    "the screen did not show {what} within {timeout:?}:\n{screen}\n{}",
                    context()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The command line that runs the dashboard and then reports how it ended.
fn tui_command(socket: &Path) -> String {
    tui_command_with(&format!("--socket {}", socket.display()))
}

/// The same with any flags.
fn tui_command_with(flags: &str) -> String {
    format!(
        // Quoted apart, so that the command line itself does not show the marker.
        "{} tui {flags}; echo \"nhiscope-tui-\"\"exited-$?\"",
        nhiscope_bin().display(),
    )
}

/// After the dashboard quit: the shell is back, the exit code is 0, nothing of the dashboard
/// is left on the screen.
#[track_caller]
fn assert_left_clean(tmux: &Tmux, context: impl Fn() -> String) {
    let screen = tmux.wait_for("the shell again", SHOWN, &context, |s| s.contains(EXITED));
    assert!(
        screen.contains(&format!("{EXITED}0")),
        "the dashboard did not exit 0:\n{screen}"
    );
    for tui in ["1 Overview", "q:quit", "● LIVE", "DAEMON NOT RUNNING"] {
        assert!(
            !screen.contains(tui),
            "`{tui}` is still on the screen after quitting:\n{screen}"
        );
    }
    // The terminal is back in cooked mode: the shell echoes what is typed and runs it.
    tmux.type_line("echo cooked-$((40+2))");
    tmux.wait_for("the shell running a command", SHOWN, &context, |s| {
        s.contains("cooked-42")
    });
}

#[test]
fn a_real_drift_shows_in_the_feed_and_the_detail_names_the_endpoint() {
    if !require_root_bpf() || !require_tmux() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("tui")).expect("temp dir");
    let cred = dir.join("api-token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential file");
    let inside = TcpListener::bind("127.0.0.3:0").expect("listen on 127.0.0.3");
    let outside = TcpListener::bind("127.0.0.9:0").expect("listen on 127.0.0.9");
    let (p_in, p_out) = (
        inside.local_addr().expect("addr").port(),
        outside.local_addr().expect("addr").port(),
    );
    let d = Daemon::start(&format!(
        "nhis:\n  - id: tui-api\n    owner: team-tui\n    credentials:\n      - {}\n    \
         endpoints:\n      - cidr: 127.0.0.3/32\n        port: {p_in}\n",
        cred.display()
    ));
    let context = || {
        let out = d.output();
        let from = out.len().saturating_sub(20);
        format!("--- daemon output, last lines:\n{}", out[from..].join("\n"))
    };

    let tmux = Tmux::start(100, 30);
    tmux.type_line(&tui_command(&d.live_socket()));
    tmux.wait_for("the overview, live", STARTED, context, |s| {
        s.contains("● LIVE") && s.contains("tui-api") && s.contains("team-tui")
    });

    // A holder reads the credential, connects inside its scope, then outside it.
    let code = format!("open('{}').read()\n", cred.display())
        + &connect_code(&[
            ("127.0.0.3".to_owned(), p_in),
            ("127.0.0.9".to_owned(), p_out),
        ]);
    run(Command::new(PYTHON).args(["-c", &code]));

    tmux.press("2");
    let dest = format!("127.0.0.9:{p_out}");
    // Waited for whole: tmux can capture a frame half written, the table's row before the
    // selected drift's pane below it.
    let screen = tmux.wait_for("the drift in the feed", SHOWN, context, |s| {
        s.lines()
            .any(|l| l.contains("tui-api") && l.contains(&dest) && l.contains("endpoint"))
            && s.contains("endpoint_out_of_scope")
    });
    assert!(screen.contains("[2 Drift (1)]"), "{screen}");
    assert!(
        screen.contains("DRIFT 1"),
        "the header counts it:\n{screen}"
    );
    assert!(
        screen.contains("endpoint_out_of_scope"),
        "the selected drift says its kind:\n{screen}"
    );

    tmux.press("Enter");
    // Both observed endpoints drawn (a capture can catch the screen between two draws).
    let inside = format!("in  127.0.0.3:{p_in} ×1");
    let screen = tmux.wait_for("the detail", SHOWN, context, |s| {
        s.contains("[4 Detail]") && s.lines().any(|l| l.contains(&inside))
    });
    assert!(
        screen
            .lines()
            .any(|l| l.contains(&format!("OUT {dest} ×1"))),
        "the detail marks the out-of-scope endpoint:\n{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains(&format!("in  127.0.0.3:{p_in} ×1"))),
        "and the one inside the scope:\n{screen}"
    );
    assert!(
        screen.contains(&format!("127.0.0.3/32 port {p_in}")),
        "beside the declared scope:\n{screen}"
    );
    assert!(screen.contains("tui-api  DRIFT"), "{screen}");

    tmux.press("q");
    assert_left_clean(&tmux, context);
}

#[test]
fn without_a_daemon_the_dashboard_says_so_and_ctrl_c_leaves_clean() {
    if !require_tmux() {
        return;
    }
    let socket = temp_dir("tui-nodaemon").join("live.sock");
    let tmux = Tmux::start(80, 24);
    tmux.type_line(&tui_command(&socket));
    let screen = tmux.wait_for(
        "that the daemon is not running",
        STARTED,
        String::new,
        |s| s.contains("DAEMON NOT RUNNING") && s.contains("no socket at"),
    );
    assert!(screen.contains("Retrying"), "{screen}");
    // It keeps trying: the attempt count goes up.
    tmux.wait_for("a later attempt", SHOWN, String::new, |s| {
        s.contains("attempt 3") || s.contains("attempt 4") || s.contains("attempt 5")
    });
    tmux.press("C-c");
    assert_left_clean(&tmux, String::new);
}

#[test]
fn without_a_terminal_it_says_so_and_exits_1() {
    let o = Command::new(nhiscope_bin())
        .args(["tui", "--socket", "/nonexistent/live.sock"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run nhiscope tui");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nhiscope tui needs a terminal"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Uses of one NHI on `host`, `minutes_ago` minutes ago; `drift`: read by a process outside
/// its readers.
fn uses(host: &str, n: u32, minutes_ago: u64, drift: bool) -> Vec<Event> {
    let at = SystemTime::now() - Duration::from_secs(minutes_ago * 60);
    (0..n)
        .map(|i| {
            let ts = Ts::from_system(at + Duration::from_millis(u64::from(i)));
            let mut e = Event::new(Kind::Open, ts, host.into());
            e.pid = 4000 + i;
            e.exe = "/usr/bin/cat".into();
            e.comm = "cat".into();
            e.path = Some("/etc/fleet/api-token".into());
            e.result = Some(3);
            e.nhi = Some("fleet-api".into());
            if drift {
                e.verdict = Verdict::Drift;
                e.drift = vec![DriftKind::ReaderOutOfScope];
                e.reason = "/usr/bin/cat opened /etc/fleet/api-token of NHI fleet-api, outside \
                            its readers."
                    .into();
            }
            e
        })
        .collect()
}

/// History only (`--no-live`), as on an analyst's workstation: a fleet of two hosts read from
/// a real ClickHouse, then ClickHouse stops and the dashboard says so, keeps what it showed,
/// and keeps retrying.
#[test]
fn a_fleet_history_from_clickhouse_and_clickhouse_going_away() {
    if !require_tmux() {
        return;
    }
    let Some(mut ch) = ClickHouse::start("tui-history") else {
        return;
    };
    let mut config = StoreConfig::new(&ch.url()).unwrap_or_else(|e| panic!("{e}"));
    config.spool_dir = temp_dir("tui-history-spool");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (host, events) in [
            ("web-a", uses("web-a", 3, 20, true)),
            ("web-b", uses("web-b", 4, 5, false)),
        ] {
            let store = Store::start(config.clone(), host).unwrap_or_else(|e| panic!("{e}"));
            store.send(&events);
            store.heartbeat(&[("records", 1)]);
            store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let context = || String::new();
    let tmux = Tmux::start(100, 30);
    tmux.type_line(&tui_command_with(&format!(
        "--no-live --clickhouse {} --since 1h --refresh 1s",
        ch.url()
    )));
    let screen = tmux.wait_for("the fleet's history", STARTED, context, |s| {
        s.contains("fleet-api") && s.contains("2 hosts")
    });
    let row = screen
        .lines()
        .find(|l| l.contains("fleet-api"))
        .unwrap_or_default()
        .to_owned();
    // STATE NHI OWNER HOSTS READS CONNS DRIFT LAST: 2 hosts, 7 reads, 3 of them drift.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(row.contains("DRIFT"), "{screen}");
    assert!(
        cols.windows(4).any(|w| w == ["2", "7", "0", "3"]),
        "hosts 2, reads 7, conns 0, drift 3 expected in: {row}\n{screen}"
    );
    assert!(screen.contains("◷ HISTORY"), "{screen}");

    tmux.press("5");
    let screen = tmux.wait_for("the fleet in the health view", SHOWN, context, |s| {
        s.contains("[5 Health]") && s.contains("web-a") && s.contains("web-b")
    });
    assert!(screen.contains("heartbeat"), "{screen}");

    tmux.press("2");
    tmux.wait_for("the drift of web-a in the feed", SHOWN, context, |s| {
        s.lines()
            .filter(|l| l.contains("cat[400") && l.contains("reader"))
            .count()
            == 3
    });

    ch.stop();
    let screen = tmux.wait_for(
        "that ClickHouse is gone",
        Duration::from_secs(15),
        context,
        |s| s.contains("HISTORY UNAVAILABLE") && s.contains("retrying"),
    );
    assert!(screen.contains("CLICKHOUSE DOWN"), "{screen}");
    assert!(
        screen.lines().filter(|l| l.contains("fleet-api")).count() >= 3,
        "what was shown stays:\n{screen}"
    );
    tmux.press("q");
    assert_left_clean(&tmux, context);
}

/// As root, the real pipeline: the daemon writes to ClickHouse; a drift that happened before
/// the dashboard started comes from the history, one after it from the live feed, and once
/// ClickHouse has stored the second one too it is still counted once.
#[test]
fn history_and_live_together_count_each_drift_once() {
    if !require_root_bpf() || !require_tmux() {
        return;
    }
    let Some(ch) = ClickHouse::start("tui-merge") else {
        return;
    };
    let dir = std::fs::canonicalize(temp_dir("tui-merge")).expect("temp dir");
    let cred = dir.join("merge-token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential file");
    let outside = TcpListener::bind("127.0.0.9:0").expect("listen on 127.0.0.9");
    let port = outside.local_addr().expect("addr").port();
    let url = ch.url();
    // A spool of its own: the default one is the host's, and one daemon at a time may use it.
    let store_config = dir.join("clickhouse.yaml");
    std::fs::write(
        &store_config,
        format!("url: {url}\nspool_dir: {}\n", dir.join("spool").display()),
    )
    .expect("clickhouse config");
    let args = [
        std::ffi::OsStr::new("--clickhouse-config"),
        store_config.as_os_str(),
    ];
    let d = Daemon::start_with(
        &format!(
            "nhis:\n  - id: merge-api\n    credentials:\n      - {}\n    endpoints:\n      \
             - cidr: 127.0.0.3/32\n        port: 443\n",
            cred.display()
        ),
        &args,
    );
    let context = || {
        let out = d.output();
        let from = out.len().saturating_sub(20);
        format!("--- daemon output, last lines:\n{}", out[from..].join("\n"))
    };
    let code = format!("open('{}').read()\n", cred.display())
        + &connect_code(&[("127.0.0.9".to_owned(), port)]);
    // The daemon creates its tables in the background after `ready`: none yet is none stored.
    let drifts_stored = || {
        let tables = ch.query_u64(
            "SELECT count() FROM system.tables WHERE database = 'nhiscope' AND name = 'events'",
        );
        if tables == 0 {
            return 0;
        }
        ch.query_u64(
            "SELECT count() FROM nhiscope.events WHERE nhi = 'merge-api' AND verdict = 'drift'",
        )
    };
    // The first drift, stored before the dashboard starts.
    run(Command::new(PYTHON).args(["-c", &code]));
    let started = Instant::now();
    while drifts_stored() < 1 {
        assert!(started.elapsed() < STARTED, "not stored\n{}", context());
        thread::sleep(Duration::from_millis(100));
    }

    let tmux = Tmux::start(100, 30);
    tmux.type_line(&tui_command_with(&format!(
        "--socket {} --clickhouse {url} --since 1h --refresh 1s",
        d.live_socket().display()
    )));
    // Each run of the reader is one read and one connect, which drifts: READS CONNS DRIFT.
    let has_row = |s: &str, n: &str| {
        s.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            l.contains("merge-api") && cols.windows(3).any(|w| w == [n, n, n])
        })
    };
    tmux.wait_for(
        "the stored drift, from the history",
        STARTED,
        context,
        |s| s.contains("● LIVE") && s.contains("DRIFT 1") && has_row(s, "1"),
    );

    // The second drift arrives live.
    run(Command::new(PYTHON).args(["-c", &code]));
    tmux.wait_for("the live drift", SHOWN, context, |s| s.contains("DRIFT 2"));
    // ClickHouse stores it and the dashboard reads the history again, a few times.
    let started = Instant::now();
    while drifts_stored() < 2 {
        assert!(started.elapsed() < STARTED, "not stored\n{}", context());
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(3));
    let screen = tmux.screen();
    assert!(
        screen.contains("DRIFT 2") && has_row(&screen, "2"),
        "each drift counted once, after several history reads:\n{screen}"
    );
    tmux.press("2");
    let screen = tmux.wait_for("the drift feed", SHOWN, context, |s| {
        s.contains("[2 Drift (2)]")
    });
    let dest = format!("127.0.0.9:{port}");
    assert_eq!(
        screen
            .lines()
            .filter(|l| l.contains(&dest) && l.contains("endpoint"))
            .count(),
        2,
        "both drifts listed once each:\n{screen}"
    );
    tmux.press("q");
    assert_left_clean(&tmux, context);
}

/// `nhiscope tui --clickhouse-config` with an `https://` URL: the history comes over TLS,
/// verified with `ca_file:`; with another CA the dashboard says why, naming the server by
/// scheme://host:port only.
#[test]
fn the_dashboard_reads_history_over_https_and_names_the_server_by_scheme_host_port() {
    if !require_tmux() {
        return;
    }
    let pki = Pki::make("tui");
    let Some(server) = TlsClickHouse::start("tui-tls", &pki, false) else {
        return;
    };
    let mut config = StoreConfig::new(&server.ch.url()).unwrap_or_else(|e| panic!("{e}"));
    config.spool_dir = temp_dir("tui-tls-spool");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::start(config.clone(), "web-tls").unwrap_or_else(|e| panic!("{e}"));
        store.send(&uses("web-tls", 3, 5, true));
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let dir = temp_dir("tui-tls");
    let url = server.https_url();
    let write = |name: &str, ca: &Path| {
        let path = dir.join(name);
        std::fs::write(&path, format!("url: {url}\nca_file: {}\n", ca.display()))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let good = write("good.yaml", &pki.ca);
    let wrong = write("wrong.yaml", &pki.other_ca);
    let context = || String::new();

    let tmux = Tmux::start(160, 30);
    tmux.type_line(&tui_command_with(&format!(
        "--no-live --clickhouse-config {} --since 1h --refresh 1s",
        good.display()
    )));
    let screen = tmux.wait_for("the history over https", STARTED, context, |s| {
        s.contains("fleet-api")
    });
    assert!(screen.contains("◷ HISTORY"), "{screen}");
    assert!(!screen.contains("HISTORY UNAVAILABLE"), "{screen}");
    tmux.press("q");
    assert_left_clean(&tmux, context);

    let tmux = Tmux::start(160, 30);
    tmux.type_line(&tui_command_with(&format!(
        "--no-live --clickhouse-config {} --since 1h --refresh 1s",
        wrong.display()
    )));
    let screen = tmux.wait_for("the refused server", STARTED, context, |s| {
        s.contains("History cannot be read from ClickHouse")
    });
    assert!(
        screen.contains(&format!("ClickHouse {url}: ")),
        "the server as scheme://host:port:\n{screen}"
    );
    assert!(
        screen.contains("certificate") || screen.contains("UnknownIssuer"),
        "{screen}"
    );
    assert!(!screen.contains("fleet-api"), "{screen}");
    tmux.press("q");
    assert_left_clean(&tmux, context);
}

/// As root, the real pipeline with the APIs of an NHI: its endpoint declares `methods` and
/// `paths`; a holder's plaintext request made before the dashboard starts is stored by the
/// daemon in ClickHouse and comes from the history, one after it (outside the declared API)
/// from the live feed; the detail lists the declared APIs beside both, marked `in` and `OUT`.
#[test]
fn the_detail_shows_declared_apis_beside_those_seen_stored_and_live() {
    if !require_root_bpf() || !require_tmux() {
        return;
    }
    let Some(ch) = ClickHouse::start("tui-apis") else {
        return;
    };
    let dir = std::fs::canonicalize(temp_dir("tui-apis")).expect("temp dir");
    let cred = dir.join("apis-token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential file");
    // The connections complete in the listen queue; nothing needs to answer.
    let server = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let port = server.local_addr().expect("addr").port();
    let url = ch.url();
    let store_config = dir.join("clickhouse.yaml");
    std::fs::write(
        &store_config,
        format!("url: {url}\nspool_dir: {}\n", dir.join("spool").display()),
    )
    .expect("clickhouse config");
    let args = [
        std::ffi::OsStr::new("--clickhouse-config"),
        store_config.as_os_str(),
    ];
    let d = Daemon::start_with(
        &format!(
            "nhis:\n  - id: tui-apis\n    credentials:\n      - {}\n    endpoints:\n      \
             - cidr: 127.0.0.1/32\n        port: {port}\n        methods: [GET]\n        \
             paths: ['/v1/*']\n",
            cred.display()
        ),
        &args,
    );
    let context = || {
        let out = d.output();
        let from = out.len().saturating_sub(20);
        format!("--- daemon output, last lines:\n{}", out[from..].join("\n"))
    };
    // The holder reads the credential, then sends one request line and closes.
    let call = |method: &str, path: &str| {
        let code = format!(
            "import socket\nopen('{}').read()\ns = socket.create_connection(('127.0.0.1', {port}))\n\
             s.sendall(b'{method} {path}?key=not-a-real-secret HTTP/1.1\\r\\nHost: api.tui.test\\r\\n\\r\\n')\n\
             s.close()\n",
            cred.display()
        );
        run(Command::new(PYTHON).args(["-c", &code]));
    };
    let stored = || {
        // The daemon migrates in the background after `ready`: its last column first.
        let migrated = ch.query_u64(
            "SELECT count() FROM system.columns WHERE database = 'nhiscope' \
             AND table = 'events' AND name = 'http_path'",
        );
        if migrated == 0 {
            return 0;
        }
        ch.query_u64(
            "SELECT count() FROM nhiscope.events WHERE nhi = 'tui-apis' AND kind = 'request' \
             AND http_method = 'GET' AND http_path = '/v1/items'",
        )
    };
    call("GET", "/v1/items");
    let started = Instant::now();
    while stored() < 1 {
        assert!(
            started.elapsed() < STARTED,
            "the request event was not stored\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(100));
    }

    let tmux = Tmux::start(110, 32);
    tmux.type_line(&tui_command_with(&format!(
        "--socket {} --clickhouse {url} --since 1h --refresh 1s",
        d.live_socket().display()
    )));
    tmux.wait_for(
        "the overview, live and with history",
        STARTED,
        context,
        |s| s.contains("● LIVE") && s.contains("tui-apis"),
    );
    call("DELETE", "/v2/admin");
    tmux.wait_for("the live drift", SHOWN, context, |s| s.contains("DRIFT 1"));
    tmux.press("1");
    tmux.press("Enter");
    let stored_api = "in  api.tui.test GET /v1/items ×1";
    let live_api = "OUT api.tui.test DELETE /v2/admin ×1";
    let screen = tmux.wait_for("the APIs in the detail", SHOWN, context, |s| {
        s.contains("[4 Detail]") && s.contains(stored_api) && s.contains(live_api)
    });
    assert!(
        screen.contains(&format!("127.0.0.1/32 port {port}")),
        "the declared endpoint:\n{screen}"
    );
    assert!(
        screen.contains("methods GET") && screen.contains("paths /v1/*"),
        "its declared APIs:\n{screen}"
    );
    assert!(
        screen.contains("APIs (server name, method, path)"),
        "{screen}"
    );
    assert!(
        !screen.contains("not-a-real-secret"),
        "no query string on screen:\n{screen}"
    );
    tmux.press("q");
    assert_left_clean(&tmux, context);
    drop(server);
}
