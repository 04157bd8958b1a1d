//! The daemon as a systemd service, on a machine where systemd is not PID 1 (as these are):
//!
//! - the real daemon tells a notify socket of the test's own `READY=1` only once its probes
//!   are attached, `WATCHDOG=1` again and again while its loop turns (and not while the loop
//!   is stuck on a blocked output), and `STOPPING=1` on SIGTERM;
//! - the Debian package (`cargo xtask package`) builds, installs with `dpkg -i` (user, files,
//!   man pages, completions), its unit passes `systemd-analyze verify`, the daemon runs as the
//!   unit starts it (its command line, its capability bounding set, its directories, the
//!   settings in /etc/default/nhiscope) and says it is ready, then `dpkg -r` and `dpkg -P`
//!   remove it. The machine is put back as it was even when the test fails, and a second run
//!   waits for the first (a lock) or cleans up after one that was killed.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use nhiscope_tests::{
    clickhouse::free_port,
    nhiscope_bin, require_root_bpf,
    systemd::{bpf_links, environment_file, probes_in_status, NotifySocket, Unit},
    temp_dir, READY_TIMEOUT, STOP_TIMEOUT,
};

const WAIT: Duration = Duration::from_secs(20);
/// How long dpkg may be kept waiting by another dpkg or apt on this machine.
const DPKG_LOCK_WAIT: Duration = Duration::from_secs(300);

/// A child process killed and reaped when dropped (a failed test leaves no daemon behind).
struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let into = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    into.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Running { child, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// SIGTERM, then its exit status (killed and a panic after `STOP_TIMEOUT`).
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the daemon's main thread (its event loop) is blocked writing to its stdout:
/// `/proc/PID/syscall` names `write` (1 on x86-64) on descriptor 1.
fn blocked_writing_stdout(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with("1 0x1 "))
}

#[test]
fn ready_after_attach_watchdog_while_the_loop_turns_and_stopping_on_sigterm() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("notify");
    let cred = dir.join("token");
    fs::write(&cred, "not-a-real-secret\n").expect("credential");
    let registry = dir.join("registry.yaml");
    fs::write(
        &registry,
        format!(
            "nhis:\n  - id: notify-test\n    credentials: [{}]\n",
            cred.display()
        ),
    )
    .expect("registry");
    // An abstract socket: `@name` in NOTIFY_SOCKET, as systemd may give.
    let mut notify = NotifySocket::abstract_named(&format!(
        "nhiscope-test-notify-{}-{}",
        std::process::id(),
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut daemon = Running::spawn(
        Command::new(nhiscope_bin())
            .arg("daemon")
            .arg("--registry")
            .arg(&registry)
            .args(["--json", "-"])
            .arg("--live-socket")
            .arg(dir.join("live.sock"))
            .env("NOTIFY_SOCKET", &notify.env)
            // 1 s: a ping every 0.5 s.
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("NHISCOPE_CLICKHOUSE_URL")
            .stdout(Stdio::piped()),
    );
    let pid = daemon.pid();

    let ready = notify.wait_for_or(
        READY_TIMEOUT,
        "READY=1",
        |m| m.lines().any(|l| l == "READY=1"),
        || format!("daemon's stderr:\n{}", daemon.stderr()),
    );
    // Counted as soon as READY=1 is in: every probe must be attached by then.
    let links = bpf_links(pid);
    let probes = probes_in_status(&ready)
        .unwrap_or_else(|| panic!("READY=1 without `STATUS=N probes attached`: {ready:?}"));
    assert!(probes > 0, "{ready:?}");
    assert_eq!(
        links,
        probes,
        "READY=1 came when {links} of {probes} programs were attached\n{}",
        daemon.stderr()
    );
    assert_eq!(
        notify.received.len(),
        1,
        "something came before READY=1: {:?}",
        notify.received
    );

    for _ in 0..3 {
        notify.wait_for(WAIT, "WATCHDOG=1", |m| m == "WATCHDOG=1");
    }

    // Stop reading the daemon's output and make events until its loop blocks writing them.
    let mut stdout = daemon.child.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blocked_writing_stdout(pid) {
        assert!(
            Instant::now() < deadline,
            "the daemon's loop never blocked on its full stdout\n{}",
            daemon.stderr()
        );
        for _ in 0..20 {
            let _ = Command::new("cat")
                .arg(&cred)
                .stdout(Stdio::null())
                .status();
        }
    }
    notify.drain();
    // The loop cannot turn until its write returns, and nothing reads the pipe: no ping may
    // come, however long one waits. Six ping periods are waited.
    let quiet = notify.next_before(Instant::now() + Duration::from_secs(3));
    assert_eq!(
        quiet, None,
        "a watchdog ping came while the loop was stuck on its output"
    );
    assert!(blocked_writing_stdout(pid), "the loop moved on by itself");

    // Reading again unblocks the loop, and the pings come back.
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    notify.wait_for(WAIT, "WATCHDOG=1 after the loop was unblocked", |m| {
        m == "WATCHDOG=1"
    });

    let status = daemon.terminate();
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    notify.wait_for(WAIT, "STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    // The events it wrote while blocked came out whole.
    let out = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&out);
    let opens = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
        })
        .filter(|e| e["kind"] == "open" && e["nhi"] == "notify-test")
        .count();
    assert!(opens > 0, "no open of the credential in the output");
}

// ---------------------------------------------------------------------------------------------
// The package.

const PACKAGE: &str = "nhiscope";
const UNIT: &str = "/lib/systemd/system/nhiscope.service";
/// Left by a run while the package or the user it made is on the machine: the next run cleans
/// up after a run that was killed.
const MARKER: &str = "/var/tmp/nhiscope-package-test.marker";

/// Files the package installs (conffiles included).
const INSTALLED: &[&str] = &[
    "/usr/bin/nhiscope",
    UNIT,
    "/etc/nhiscope/config.yaml",
    "/etc/nhiscope/registry.yaml",
    "/etc/nhiscope/clickhouse.yaml",
    "/etc/default/nhiscope",
    "/usr/share/man/man1/nhiscope.1.gz",
    "/usr/share/man/man1/nhiscope-daemon.1.gz",
    "/usr/share/man/man1/nhiscope-registry-check.1.gz",
    "/usr/share/man/man1/nhiscope-tui.1.gz",
    "/usr/share/bash-completion/completions/nhiscope",
    "/usr/share/zsh/vendor-completions/_nhiscope",
    "/usr/share/fish/vendor_completions.d/nhiscope.fish",
    "/usr/share/doc/nhiscope/copyright",
    "/usr/share/doc/nhiscope/changelog.Debian.gz",
    "/usr/share/doc/nhiscope/examples/registry.yaml",
];
const CONFFILES: &[&str] = &[
    "/etc/nhiscope/config.yaml",
    "/etc/nhiscope/registry.yaml",
    "/etc/nhiscope/clickhouse.yaml",
    "/etc/default/nhiscope",
];
/// Where deb-systemd-helper enables and masks the unit.
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/nhiscope.service";
const MASK_LINK: &str = "/etc/systemd/system/nhiscope.service";

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `dpkg ARGS`, waiting while another dpkg or apt holds dpkg's lock.
#[track_caller]
fn dpkg(args: &[&str]) -> String {
    let deadline = Instant::now() + DPKG_LOCK_WAIT;
    loop {
        let o = output(Command::new("dpkg").args(args));
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            return format!("{}{err}", String::from_utf8_lossy(&o.stdout));
        }
        if err.contains("lock") && Instant::now() < deadline {
            thread::sleep(Duration::from_secs(1));
            continue;
        }
        panic!("dpkg {args:?}: {}\n{err}", o.status);
    }
}

/// dpkg's status of the package: `install ok installed`, `deinstall ok config-files`, or
/// `None` when dpkg does not know it.
fn package_status() -> Option<String> {
    let o = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !s.is_empty() && s != "unknown ok not-installed").then_some(s)
}

fn user_exists() -> bool {
    output(Command::new("getent").args(["passwd", PACKAGE]))
        .status
        .success()
}

/// Holds a lock so that two runs (two `cargo test`s) never install or remove at once; the lock
/// goes with the file when this is dropped.
struct MachineLock {
    _file: fs::File,
}

impl MachineLock {
    fn take() -> MachineLock {
        use std::os::fd::AsRawFd as _;
        let f = fs::File::create("/tmp/nhiscope-package-test.lock").expect("lock file");
        // SAFETY: flock on a descriptor we own; it blocks until the other run lets go.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        MachineLock { _file: f }
    }
}

/// The machine as the test found it: on drop, the package is purged and the user it made
/// removed, whatever happened in between.
struct Restore {
    made_user: bool,
}

impl Restore {
    /// Cleans up after a run that was killed (its marker is still there), and refuses to touch
    /// a package that some other hand installed.
    fn prepare() -> Restore {
        if let Ok(marker) = fs::read_to_string(MARKER) {
            eprintln!("a previous run left the package or its user: cleaning up");
            Restore {
                made_user: marker.contains("made-user"),
            }
            .restore();
        }
        if let Some(status) = package_status() {
            panic!(
                "the {PACKAGE} package is on this machine ({status}), not installed by this \
                 test: purge it (`dpkg -P {PACKAGE}`) to run this test"
            );
        }
        let made_user = !user_exists();
        fs::write(
            MARKER,
            if made_user {
                "package made-user\n"
            } else {
                "package\n"
            },
        )
        .expect("marker");
        Restore { made_user }
    }

    fn restore(&self) {
        // A daemon of the package left running by a run that was killed (it outlives the test,
        // its parent): it would hold the live socket and keep the user in use.
        for pid in processes_running("/usr/bin/nhiscope") {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if package_status().is_some() {
            let _ = Command::new("dpkg").args(["-P", PACKAGE]).status();
        }
        let _ = fs::remove_dir_all("/run/nhiscope");
        if self.made_user && user_exists() {
            let _ = Command::new("userdel").arg(PACKAGE).status();
        }
        // userdel takes the user's own group along where USERGROUPS_ENAB is set.
        let group_left = output(Command::new("getent").args(["group", PACKAGE]))
            .status
            .success();
        if self.made_user && group_left {
            let _ = Command::new("groupdel").arg(PACKAGE).status();
        }
        if package_status().is_none() && (!self.made_user || !user_exists()) {
            let _ = fs::remove_file(MARKER);
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The processes whose executable is `exe` (also when it was deleted since).
fn processes_running(exe: &str) -> Vec<libc::pid_t> {
    let deleted = format!("{exe} (deleted)");
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
                .filter(|pid| {
                    fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|p| p.as_os_str() == exe || p.as_os_str() == deleted.as_str())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `cargo xtask package --binary <the binary under test> --out <dir>`: the .deb it wrote.
fn build_package(out: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    ok(Command::new(cargo)
        .current_dir(workspace)
        .args(["xtask", "package", "--binary"])
        .arg(nhiscope_bin())
        .arg("--out")
        .arg(out));
    let debs: Vec<PathBuf> = fs::read_dir(out)
        .expect("out dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}: {debs:?}",
        out.display()
    );
    debs[0].clone()
}

/// Waits for a line of `path` that contains `needle`.
#[track_caller]
fn wait_for_line(path: &Path, needle: &str, daemon: &Running) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(needle))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle} in {} within {WAIT:?}\n{}",
            path.display(),
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn status_field(pid: u32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn the_package_installs_runs_as_its_unit_and_is_removed_and_purged_cleanly() {
    if !require_root_bpf() {
        return;
    }
    let _lock = MachineLock::take();
    let restore = Restore::prepare();
    let work = temp_dir("package");

    // Build, and look inside.
    let deb = build_package(&work.join("out"));
    let deb_arg = deb.to_str().expect("utf-8 path");
    let info = ok(Command::new("dpkg-deb").args(["--info", deb_arg]));
    for field in [
        "Package: nhiscope",
        "Depends: libc6",
        "libgcc-s1",
        "adduser",
        "Section: admin",
    ] {
        assert!(
            info.contains(field),
            "{field} missing from dpkg-deb --info:\n{info}"
        );
    }
    for conffile in CONFFILES {
        // dpkg-deb --info lists the control members; the conffiles member's content:
        let listed = ok(Command::new("dpkg-deb").args(["--info", deb_arg, "conffiles"]));
        assert!(
            listed.lines().any(|l| l == *conffile),
            "{conffile}: {listed}"
        );
    }
    let contents = ok(Command::new("dpkg-deb").args(["--contents", deb_arg]));
    for file in INSTALLED {
        assert!(
            contents.contains(&format!(".{file}")),
            "{file} not in the package:\n{contents}"
        );
    }
    assert!(
        contents.contains("-rwxr-xr-x root/root") && contents.contains("./usr/bin/nhiscope"),
        "{contents}"
    );

    // Install.
    dpkg(&["-i", deb_arg]);
    assert_eq!(package_status().as_deref(), Some("install ok installed"));
    let passwd = ok(Command::new("getent").args(["passwd", PACKAGE]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
    for file in INSTALLED {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    assert_eq!(
        fs::read_link(ENABLED_LINK).ok().as_deref(),
        Some(Path::new(UNIT)),
        "the unit is not enabled"
    );
    let version = ok(Command::new("/usr/bin/nhiscope").arg("--version"));
    assert_eq!(
        version.trim(),
        format!("nhiscope {}", env!("CARGO_PKG_VERSION"))
    );
    for page in INSTALLED.iter().filter(|f| f.ends_with(".1.gz")) {
        let text = ok(Command::new("man")
            .args(["-l", page])
            .env("MANPAGER", "cat"));
        assert!(
            text.contains("NAME") && text.contains("nhiscope"),
            "{page}: {text}"
        );
    }
    let daemon_page = ok(Command::new("man")
        .args(["-P", "cat", "nhiscope-daemon"])
        .env("MANWIDTH", "200"));
    assert!(daemon_page.contains("--registry"), "{daemon_page}");
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    for conffile in CONFFILES {
        assert!(
            conffiles.contains(conffile),
            "{conffile} not a conffile: {conffiles}"
        );
    }

    // The unit, as systemd reads it (systemd-analyze warns on stderr and still exits 0 for an
    // unknown key or a bad value: no output at all is the pass).
    let verify = output(Command::new("systemd-analyze").args(["verify", UNIT]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");

    // Run the daemon as the unit starts it, with ClickHouse turned on the way the README says
    // (in /etc/default/nhiscope) at an address where nothing listens: it spools.
    let unit = Unit::read(Path::new(UNIT));
    assert_eq!(unit.get("Type"), "notify");
    fs::write(
        "/etc/default/nhiscope",
        "NHISCOPE_ARGS=\"--clickhouse-config /etc/nhiscope/clickhouse.yaml\"\n",
    )
    .expect("/etc/default/nhiscope");
    let vars = environment_file(Path::new(
        unit.get("EnvironmentFile").trim_start_matches('-'),
    ));
    let argv = unit.exec_start(&vars);
    assert!(argv.contains(&"--clickhouse-config".to_owned()), "{argv:?}");
    for (dir, mode) in unit.directories() {
        fs::create_dir_all(&dir).expect("unit directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // The notify socket in a directory only root may enter: the daemon must connect before it
    // gives up root, as it does.
    let notify_dir = work.join("notify");
    fs::create_dir_all(&notify_dir).expect("notify dir");
    fs::set_permissions(&notify_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut notify = NotifySocket::at_path(&notify_dir.join("notify"));
    let mut daemon = Running::spawn(
        Command::new("setpriv")
            .arg(format!(
                "--bounding-set={}",
                unit.bounding_set_for_setpriv()
            ))
            .args(["--inh-caps=-all", "--no-new-privs", "--"])
            .args(&argv)
            .env("NOTIFY_SOCKET", &notify.env)
            .env("WATCHDOG_USEC", "2000000")
            .env(
                "NHISCOPE_CLICKHOUSE_URL",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .stdout(Stdio::null()),
    );
    let pid = daemon.pid();
    let ready = notify.wait_for_or(
        READY_TIMEOUT,
        "READY=1",
        |m| m.lines().any(|l| l == "READY=1"),
        || format!("daemon's stderr:\n{}", daemon.stderr()),
    );
    let probes = probes_in_status(&ready).expect("STATUS=N probes attached");
    assert_eq!(bpf_links(pid), probes, "{}", daemon.stderr());
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some(uid.to_string().as_str()),
        "not running as the nhiscope user"
    );
    notify.wait_for(WAIT, "WATCHDOG=1", |m| m == "WATCHDOG=1");

    // An unregistered credential use lands in /var/log/nhiscope/events.jsonl (config.yaml's `json:`).
    let env_file = work.join("proj/.env");
    fs::create_dir_all(env_file.parent().expect("parent")).expect("dir");
    fs::write(&env_file, "A=1\n").expect(".env");
    let _ = Command::new("cat")
        .arg(&env_file)
        .stdout(Stdio::null())
        .status();
    let events = Path::new("/var/log/nhiscope/events.jsonl");
    let line = wait_for_line(events, &env_file.display().to_string(), &daemon);
    assert!(line.contains("\"unregistered\""), "{line}");
    let m = fs::metadata(events).expect("events.json");
    assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o600), "events.json");
    let spool = fs::metadata("/var/lib/nhiscope/spool").expect("the spool");
    assert_eq!((spool.uid(), spool.mode() & 0o777), (uid, 0o700), "spool");
    let socket = fs::metadata("/run/nhiscope/live.sock").expect("the live socket");
    assert!(socket.file_type().is_socket());
    assert_eq!(socket.mode() & 0o777, 0o600);

    let status = daemon.terminate();
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    notify.wait_for(WAIT, "STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    drop(daemon);
    // systemd removes the RuntimeDirectory when the service stops.
    let _ = fs::remove_dir_all("/run/nhiscope");

    // Upgrade (the same version again takes the same path through dpkg and postinst): the
    // edited configuration, the user and the spool are kept.
    let edited = fs::read_to_string("/etc/default/nhiscope").expect("/etc/default/nhiscope");
    dpkg(&["-i", deb_arg]);
    assert_eq!(package_status().as_deref(), Some("install ok installed"));
    assert_eq!(
        fs::read_to_string("/etc/default/nhiscope").ok().as_deref(),
        Some(edited.as_str()),
        "the upgrade replaced an edited conffile"
    );
    assert_eq!(ok(Command::new("getent").args(["passwd", PACKAGE])), passwd);
    assert!(
        Path::new("/var/lib/nhiscope/spool").is_dir(),
        "spool gone on upgrade"
    );

    // Remove: the program goes, the configuration and the data stay; the unit is masked.
    dpkg(&["-r", PACKAGE]);
    assert_eq!(
        package_status().as_deref(),
        Some("deinstall ok config-files")
    );
    for file in INSTALLED {
        let conf = CONFFILES.contains(file);
        assert_eq!(Path::new(file).exists(), conf, "{file} after dpkg -r");
    }
    assert!(
        Path::new("/var/lib/nhiscope/spool").is_dir(),
        "spool gone on remove"
    );
    assert_eq!(
        fs::read_link(MASK_LINK).ok().as_deref(),
        Some(Path::new("/dev/null")),
        "the unit is not masked after dpkg -r"
    );

    // Purge: the configuration (edited or not), the state, the logs and the unit's links go.
    dpkg(&["-P", PACKAGE]);
    assert_eq!(package_status(), None);
    for gone in [
        "/etc/nhiscope",
        "/etc/default/nhiscope",
        "/var/lib/nhiscope",
        "/var/log/nhiscope",
        ENABLED_LINK,
        MASK_LINK,
    ] {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after dpkg -P"
        );
    }
    // The system user stays, as Debian advises (postrm says why); the test removes the one it
    // made.
    assert!(user_exists(), "the nhiscope user was removed");
    drop(restore);
    assert!(!Path::new(MARKER).exists(), "the machine was not restored");
}
