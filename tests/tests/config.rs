//! The daemon's configuration file with the real daemon: `nhiscope daemon --config FILE` alone
//! runs on it, flags win over it, bad files are refused with exit 2 and FILE:LINE:COLUMN,
//! `nhiscope config check` passes on the shipped example and the daemon runs with it, and SIGHUP
//! applies a new registry path, names what needs a restart, and changes nothing when the file
//! has become invalid.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{
    procs::run, prometheus, require_root_bpf, run_nhiscope as nhiscope, stderr_of as stderr,
    temp_dir, Daemon,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory (its real path) with a credential file `NAME-token` and a registry
/// `NAME.yaml` naming it as NHI `NAME`, for each of `names`.
fn setup(test: &str, names: &[&str]) -> PathBuf {
    let dir = fs::canonicalize(temp_dir(test)).expect("temp dir");
    for name in names {
        let cred = dir.join(format!("{name}-token"));
        fs::write(&cred, "not-a-real-secret\n").expect("credential");
        fs::write(
            dir.join(format!("{name}.yaml")),
            format!(
                "nhis:\n  - id: {name}\n    credentials: [{}]\n",
                cred.display()
            ),
        )
        .expect("registry");
    }
    dir
}

fn cat(path: &Path) -> u32 {
    run(Command::new("cat").arg(path).stdout(Stdio::null()))
}

fn open_of(e: &Value, pid: u32, path: &Path) -> bool {
    e["kind"] == "open" && e["pid"] == pid && e["path"] == path.to_str().expect("utf8")
}

/// The daemon on `--config CONFIG` and `extra` flags, its events expected in `events`.
#[track_caller]
fn start(dir: &Path, config: &Path, events: &Path, extra: &[&str]) -> Daemon {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), config.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Daemon::start_args(dir, events, &args)
}

#[test]
fn with_only_a_config_file_it_runs_and_writes_events_to_its_json_file() {
    if !require_root_bpf() {
        return;
    }
    let dir = setup("cfg-only", &["svc"]);
    let config = dir.join("config.yaml");
    // Relative paths: the config file's directory.
    fs::write(
        &config,
        "registry: svc.yaml\njson: out/events.jsonl\nlive_socket: live.sock\nhostname: cfg-host\n\
         cmdline: argv0\n",
    )
    .expect("config");
    fs::create_dir_all(dir.join("out")).expect("out");
    let events = dir.join("out/events.jsonl");
    let d = start(&dir, &config, &events, &[]);
    let cred = dir.join("svc-token");
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["nhi"], "svc");
    assert_eq!(e["host"], "cfg-host");
    assert_eq!(e["cmdline"], serde_json::json!(["cat"]), "cmdline: argv0");
    assert!(dir.join("live.sock").exists(), "the file's live_socket");
    assert!(d.stop().success());
}

#[test]
fn a_flag_given_wins_over_the_file() {
    if !require_root_bpf() {
        return;
    }
    let dir = setup("cfg-flag", &["svc"]);
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        format!(
            "registry: svc.yaml\njson: {}\nlive_socket: live.sock\nhostname: from-file\n",
            dir.join("file-events.jsonl").display()
        ),
    )
    .expect("config");
    let events = dir.join("flag-events.jsonl");
    let d = start(
        &dir,
        &config,
        &events,
        &[
            "--hostname",
            "from-flag",
            "--json",
            events.to_str().expect("utf8"),
        ],
    );
    let cred = dir.join("svc-token");
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["host"], "from-flag");
    assert!(
        !dir.join("file-events.jsonl").exists(),
        "the file's json: was used although --json was given"
    );
    assert!(d.stop().success());
}

#[test]
fn an_unknown_key_and_a_bad_value_exit_2_naming_their_place() {
    // Refused before anything is loaded: no root needed.
    let dir = setup("cfg-bad", &["svc"]);
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        "registry: svc.yaml\n# the ring\nringbuf: 65536\nringbuf_size: 65535\nmetrics: 127.0.0.1:9464\n",
    )
    .expect("config");
    let f = config.display().to_string();
    let unknown = format!("{f}:3:1: unknown field `ringbuf`, expected one of");
    let bad = format!("{f}:4:15: ringbuf_size: 65535 is not a power of two of at least 4096");
    for args in [
        vec!["daemon".as_ref(), "--config".as_ref(), config.as_os_str()],
        vec!["config".as_ref(), "check".as_ref(), config.as_os_str()],
    ] {
        let o = nhiscope(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "{args:?}: every error, and only them: {err}"
        );
        assert!(lines[0].starts_with(&unknown), "{args:?}: {err}");
        assert_eq!(lines[1], bad, "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // The same value as a flag is refused the same way.
    let o = nhiscope(&[
        "daemon".as_ref(),
        "--registry".as_ref(),
        dir.join("svc.yaml").as_os_str(),
        "--ringbuf-size".as_ref(),
        "65535".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("65535 is not a power of two"),
        "{}",
        stderr(&o)
    );
    // Neither --registry nor registry:.
    fs::write(&config, "ringbuf_size: 65536\n").expect("config");
    let o = nhiscope(&["daemon".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{f}: no `registry:` here and no --registry FILE")),
        "{}",
        stderr(&o)
    );
    let o = nhiscope(&["daemon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--registry FILE is needed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_check_passes_on_the_example_and_the_daemon_runs_with_it() {
    if !require_root_bpf() {
        return;
    }
    let dir = setup("cfg-example", &[]);
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/daemon.yaml"))
            .expect("examples/daemon.yaml");
    // The example as shipped, its system directories moved under this test's.
    let mut text = example.clone();
    for (system, here) in [
        ("/etc/nhiscope/", "etc"),
        ("/var/log/nhiscope/", "log"),
        ("/run/nhiscope/", "run"),
        ("/var/lib/nhiscope/", "lib"),
    ] {
        let here = dir.join(here);
        fs::create_dir_all(&here).expect("dir");
        text = text.replace(system, &format!("{}/", here.display()));
    }
    assert!(
        example.contains("\nregistry: /etc/nhiscope/registry.yaml\n")
            && example.contains("\njson: /var/log/nhiscope/events.jsonl\n")
            && example.contains("\nlive_socket: /run/nhiscope/live.sock\n"),
        "the example's registry, events file and socket moved"
    );
    let cred = dir.join("etc/token");
    fs::write(&cred, "not-a-real-secret\n").expect("credential");
    fs::write(
        dir.join("etc/registry.yaml"),
        format!(
            "nhis:\n  - id: example\n    credentials: [{}]\n",
            cred.display()
        ),
    )
    .expect("registry");
    let config = dir.join("etc/config.yaml");
    fs::write(&config, &text).expect("config");

    let o = nhiscope(&["config".as_ref(), "check".as_ref(), config.as_os_str()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}{out}", stderr(&o));
    let events = dir.join("log/events.jsonl");
    assert_eq!(
        out.trim(),
        format!(
            "{}: ok: registry {} (1 NHIs), events {}, ClickHouse off, metrics off, user root",
            config.display(),
            dir.join("etc/registry.yaml").display(),
            events.display()
        )
    );

    let d = start(&dir, &config, &events, &[]);
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["nhi"], "example");
    assert!(dir.join("run/live.sock").exists());
    assert!(d.stop().success());
}

#[test]
fn sighup_applies_a_new_registry_path_and_an_invalid_file_changes_nothing() {
    if !require_root_bpf() {
        return;
    }
    let dir = setup("cfg-hup", &["first", "second"]);
    let config = dir.join("config.yaml");
    let events = dir.join("events.jsonl");
    let base = "json: events.jsonl\nlive_socket: live.sock\n";
    fs::write(&config, format!("registry: first.yaml\n{base}")).expect("config");
    let d = start(&dir, &config, &events, &[]);
    let (first, second) = (dir.join("first-token"), dir.join("second-token"));
    let pid = cat(&first);
    assert_eq!(
        d.wait_for(WAIT, |e| open_of(e, pid, &first))["nhi"],
        "first"
    );

    // An invalid file: its error with its place, and nothing changes.
    fs::write(
        &config,
        format!("registry: second.yaml\n{base}ringbuf_size: 3\n"),
    )
    .expect("config");
    let seen = d.output().len();
    d.signal(libc::SIGHUP);
    let f = config.display().to_string();
    d.wait_output(WAIT, seen, |l| {
        l.contains(&format!(
            "SIGHUP: {f}:4:15: ringbuf_size: 3 is not a power of two"
        ))
    });
    d.wait_output(WAIT, seen, |l| l.contains("is invalid: nothing reloaded"));
    let pid = cat(&first);
    assert_eq!(
        d.wait_for(WAIT, |e| open_of(e, pid, &first))["nhi"],
        "first",
        "the registry in force stays"
    );

    // Valid again, with another registry: it is in force once the reload is logged.
    fs::write(&config, format!("registry: second.yaml\n{base}")).expect("config");
    let seen = d.output().len();
    d.signal(libc::SIGHUP);
    d.wait_output(WAIT, seen, |l| l.contains("registry reloaded: 1 NHIs"));
    let pid = cat(&second);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &second));
    assert_eq!(e["nhi"], "second");
    assert!(
        !d.output()[seen..]
            .iter()
            .any(|l| l.contains("needs a restart")),
        "only the registry changed: {:?}",
        &d.output()[seen..]
    );
    // The new path is the one followed from now on: an edit to it is reloaded on its own.
    let third = dir.join("third-token");
    fs::write(&third, "x").expect("third");
    fs::write(
        dir.join("second.yaml"),
        format!(
            "nhis:\n  - id: third\n    credentials: [{}]\n",
            third.display()
        ),
    )
    .expect("registry");
    d.wait_output(WAIT, seen, |l| l.contains("second.yaml changed: reloading"));
    d.wait_output(WAIT, seen, |l| l.contains("registry reloaded"));
    let pid = cat(&third);
    assert_eq!(
        d.wait_for(WAIT, |e| open_of(e, pid, &third))["nhi"],
        "third"
    );
    assert!(d.stop().success());
}

#[test]
fn sighup_with_a_changed_ring_size_says_it_needs_a_restart_and_keeps_the_running_one() {
    if !require_root_bpf() {
        return;
    }
    let dir = setup("cfg-ring", &["svc"]);
    let config = dir.join("config.yaml");
    let events = dir.join("events.jsonl");
    let base = "registry: svc.yaml\njson: events.jsonl\nlive_socket: live.sock\n\
                metrics: 127.0.0.1:0\n";
    fs::write(
        &config,
        format!("{base}ringbuf_size: 65536\nlog_level: info\n"),
    )
    .expect("config");
    let d = start(&dir, &config, &events, &[]);
    let addr = prometheus::metrics_addr(&d);
    let size = |text: &str| prometheus::sample(text, "nhiscope_ringbuf_size_bytes");
    prometheus::wait_scrape(addr, WAIT, |t| size(t) == Some(65536.0));

    fs::write(
        &config,
        format!("{base}ringbuf_size: 131072\nlog_level: debug\n"),
    )
    .expect("config");
    let seen = d.output().len();
    d.signal(libc::SIGHUP);
    let f = config.display().to_string();
    d.wait_output(WAIT, seen, |l| {
        l.contains(&format!("SIGHUP: {f}: needs a restart: ringbuf_size "))
    });
    // log_level changed live: debug lines appear from now on.
    d.wait_output(WAIT, seen, |l| l.contains("SIGHUP: log_level is now debug"));
    d.wait_output(Duration::from_secs(30), seen, |l| l.contains("DEBUG"));
    // The running ring buffer stays, and the daemon goes on.
    let text = prometheus::scrape(addr);
    assert_eq!(size(&text), Some(65536.0), "{text}");
    let cred = dir.join("svc-token");
    let pid = cat(&cred);
    assert_eq!(d.wait_for(WAIT, |e| open_of(e, pid, &cred))["nhi"], "svc");
    assert!(d.stop().success());
}
