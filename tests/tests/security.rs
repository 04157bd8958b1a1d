//! The daemon's own files and privileges, as root: what it writes is private (0600 files, 0700
//! directories), it refuses paths another user could have prepared (a symbolic link at the
//! `--json` path, a spool that is not its own), one daemon per spool and per socket, and
//! `--user` leaves it running as that user with only the capabilities it needs, on every
//! thread.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use nhiscope_tests::{
    clickhouse::free_port, nhiscope_bin, require_root_bpf, stderr_of as stderr, temp_dir, Daemon,
    READY_TIMEOUT,
};

const WAIT: Duration = Duration::from_secs(10);
/// The unprivileged user the `--user` test switches to (made with `useradd` when missing).
const TEST_USER: &str = "nhiscope-test";

/// A store config with a spool at `spool` and a ClickHouse that is not there (nothing listens
/// on a free port): the daemon spools, which is what these tests look at.
fn store_config(dir: &Path, spool: &Path) -> PathBuf {
    let path = dir.join("clickhouse.yaml");
    fs::write(
        &path,
        format!(
            "url: http://127.0.0.1:{}\nspool_dir: {}\nbatch_interval: 100ms\n",
            free_port(),
            spool.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn registry(dir: &Path) -> PathBuf {
    let path = dir.join("registry.yaml");
    let cred = dir.join("token");
    fs::write(&cred, "not-a-real-secret\n").expect("credential");
    fs::write(
        &path,
        format!(
            "nhis:\n  - id: svc\n    credentials: [{}]\n",
            cred.display()
        ),
    )
    .expect("registry");
    path
}

/// Runs `nhiscope daemon` with `args`, which must stop by itself.
fn daemon_run(args: &[&std::ffi::OsStr]) -> Output {
    run_to_end(Command::new(nhiscope_bin()).arg("daemon").args(args))
}

/// Runs `cmd`, which must stop by itself: a daemon still running after [`READY_TIMEOUT`] (it
/// accepted what it should have refused) is killed, and the test fails.
fn run_to_end(cmd: &mut Command) -> Output {
    let mut child = cmd
        .env_remove("NHISCOPE_CLICKHOUSE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let o = child.wait_with_output().expect("wait");
            panic!(
                "the daemon should have stopped by itself, and ran instead:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// `Key:\tvalue` of /proc/PID/status (or of a thread's status file).
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
        .trim()
        .to_owned()
}

#[test]
fn every_file_the_daemon_writes_is_private() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("sec-modes");
    let spool = dir.join("spool");
    let config = store_config(&dir, &spool);
    let d = Daemon::start_with(
        "nhis: []\n",
        &["--clickhouse-config".as_ref(), config.as_os_str()],
    );
    let status = fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    assert_eq!(status_field(&status, "Umask"), "0077");
    let socket = d.live_socket();
    // Let the store write its checkpoint and spool a heartbeat or two.
    std::thread::sleep(Duration::from_millis(1500));
    let mut lock_name = socket.as_os_str().to_owned();
    lock_name.push(".lock");
    let expected = [
        (d.events_path().to_path_buf(), 0o600),
        (socket.clone(), 0o600),
        (PathBuf::from(lock_name), 0o600),
        (spool.clone(), 0o700),
        (spool.join("batches"), 0o700),
        (spool.join("state.json"), 0o600),
        (spool.join("lock"), 0o600),
    ];
    for (path, want) in &expected {
        assert_eq!(
            mode(path),
            *want,
            "{} is {:04o}, expected {want:04o}",
            path.display(),
            mode(path)
        );
    }
    // The lock says who holds it.
    assert_eq!(
        fs::read_to_string(spool.join("lock")).expect("lock").trim(),
        d.pid().to_string()
    );
    let pid = d.pid();
    assert!(d.stop().success());
    for entry in walk(&spool) {
        let m = mode(&entry);
        assert_eq!(
            m & 0o077,
            0,
            "{} is {m:04o}: readable by others (daemon {pid})",
            entry.display()
        );
    }
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_symlink_planted_at_the_json_path_is_refused_not_followed() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("sec-symlink");
    let target = dir.join("victim");
    fs::write(&target, "untouched\n").expect("victim");
    let link = dir.join("events.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let reg = registry(&dir);
    let o = daemon_run(&[
        "--registry".as_ref(),
        reg.as_os_str(),
        "--json".as_ref(),
        link.as_os_str(),
        "--live-socket".as_ref(),
        dir.join("live.sock").as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&target).expect("victim"), "untouched\n");
    assert!(fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
}

#[test]
fn a_second_daemon_on_the_same_spool_or_socket_exits_2_naming_the_first() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("sec-second");
    let spool = dir.join("spool");
    let config = store_config(&dir, &spool);
    let first = Daemon::start_with(
        "nhis: []\n",
        &["--clickhouse-config".as_ref(), config.as_os_str()],
    );
    let reg = registry(&dir);
    let pid = format!("pid {}", first.pid());

    // The same socket, another spool.
    let other_dir = temp_dir("sec-second-other");
    let other_config = store_config(&other_dir, &other_dir.join("spool"));
    let o = daemon_run(&[
        "--registry".as_ref(),
        reg.as_os_str(),
        "--live-socket".as_ref(),
        first.live_socket().as_os_str(),
        "--clickhouse-config".as_ref(),
        other_config.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("live socket"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&pid), "{}", stderr(&o));

    // The same spool, another socket.
    let o = daemon_run(&[
        "--registry".as_ref(),
        reg.as_os_str(),
        "--live-socket".as_ref(),
        other_dir.join("live.sock").as_os_str(),
        "--clickhouse-config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("spool directory"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&pid), "{}", stderr(&o));

    // The first one did not notice.
    assert!(first.stop().success());
}

#[test]
fn a_spool_that_is_not_the_daemons_own_is_refused() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("sec-spool-owner");
    let reg = registry(&dir);
    let spool = dir.join("spool");
    fs::create_dir(&spool).expect("spool");
    let c = std::ffi::CString::new(spool.to_str().expect("utf8")).expect("path");
    // SAFETY: chown with a valid C path; 65534 is `nobody`, someone else than root.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    let config = store_config(&dir, &spool);
    let run = |config: &Path| {
        daemon_run(&[
            "--registry".as_ref(),
            reg.as_os_str(),
            "--live-socket".as_ref(),
            dir.join("live.sock").as_os_str(),
            "--clickhouse-config".as_ref(),
            config.as_os_str(),
        ])
    };
    let o = run(&config);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("owned by uid 65534"), "{}", stderr(&o));

    // Root's own, but anyone may write there.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).expect("chmod");
    let o = run(&config);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lets other users write"),
        "{}",
        stderr(&o)
    );
}

/// The uid of `TEST_USER`, made with `useradd` when missing.
fn test_user() -> u32 {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, TEST_USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
    };
    if let Some(uid) = id("-u") {
        return uid;
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ])
        .status()
        .expect("run useradd");
    // Another test process may have made it meanwhile.
    id("-u").unwrap_or_else(|| panic!("useradd {TEST_USER} failed: {made}"))
}

#[test]
fn with_user_it_runs_unprivileged_on_every_thread_and_keeps_working() {
    if !require_root_bpf() {
        return;
    }
    let uid = test_user();
    let dir = temp_dir("sec-user");
    let spool = dir.join("spool");
    let config = store_config(&dir, &spool);
    let cred = dir.join("token");
    fs::write(&cred, "not-a-real-secret\n").expect("credential");
    let d = Daemon::start_with(
        &format!(
            "nhis:\n  - id: svc\n    credentials: [{}]\n",
            cred.display()
        ),
        &[
            "--user".as_ref(),
            TEST_USER.as_ref(),
            "--clickhouse-config".as_ref(),
            config.as_os_str(),
        ],
    );
    // CAP_BPF (39), CAP_DAC_READ_SEARCH (2), nothing else.
    let kept = format!("{:016x}", (1u64 << 39) | (1 << 2));
    let tasks: Vec<PathBuf> = fs::read_dir(format!("/proc/{}/task", d.pid()))
        .expect("tasks")
        .map(|e| e.expect("task").path())
        .collect();
    assert!(!tasks.is_empty());
    for t in &tasks {
        let status = fs::read_to_string(t.join("status")).expect("status");
        let want = format!("{uid}\t{uid}\t{uid}\t{uid}");
        assert_eq!(status_field(&status, "Uid"), want, "{}", t.display());
        assert_eq!(status_field(&status, "Gid").split('\t').count(), 4);
        assert_eq!(status_field(&status, "CapEff"), kept, "{}", t.display());
        assert_eq!(status_field(&status, "CapPrm"), kept, "{}", t.display());
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{}", t.display());
    }
    // Its files are its user's, so that it keeps writing them.
    assert_eq!(fs::metadata(d.events_path()).expect("events").uid(), uid);
    assert_eq!(fs::metadata(&spool).expect("spool").uid(), uid);
    // And it still sees and decides.
    let cat = Command::new("cat")
        .arg(&cred)
        .stdout(Stdio::null())
        .spawn()
        .expect("cat");
    let pid = cat.id();
    let _ = cat.wait_with_output();
    d.wait_for(WAIT, |e| {
        e["kind"] == "open" && e["pid"] == pid && e["nhi"] == "svc"
    });
    // Its store, started after the switch, writes the spool as that user.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fs::metadata(spool.join("state.json")).expect("state").uid(),
        uid
    );
    assert!(d.stop().success());
}

#[test]
fn a_failed_privilege_drop_stops_the_daemon() {
    if !require_root_bpf() {
        return;
    }
    // Without CAP_SETPCAP the daemon can still load its programs, but not empty its bounding
    // set: it must stop rather than run on with more than it meant to keep.
    let dir = temp_dir("sec-drop");
    let reg = registry(&dir);
    let o = run_to_end(
        Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-setpcap"])
            .arg(nhiscope_bin())
            .arg("daemon")
            .arg("--registry")
            .arg(&reg)
            .arg("--live-socket")
            .arg(dir.join("live.sock")),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot drop privileges"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("ready"), "{}", stderr(&o));
}
