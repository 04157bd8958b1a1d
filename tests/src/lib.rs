//! Harness for the end-to-end tests: the real `nhiscope` binary, its real probes, real processes.
//!
//! A test checks [`require_root_bpf`] first, starts a [`Daemon`] on a registry of its own, makes
//! processes do things, then waits for the events it expects with [`Daemon::wait_for`]. Every
//! failure is a panic whose message carries the daemon's last stderr lines and its last events,
//! because that is what one needs to see when a kernel test fails in CI.
//!
//! The binary is `$NHISCOPE_BIN`, else the `nhiscope` next to the test executable's profile
//! directory (`target/debug/nhiscope` for `target/debug/deps/<test>`): it lives in another
//! package (monitor-user), so cargo's `CARGO_BIN_EXE_*` does not reach it. `cargo xtask test`
//! builds it first and sets `NHISCOPE_BIN`.
//!
//! The harness fails a test by panicking, as the tests themselves do (a stack trace names the
//! step): `expect` is how it says which step failed.
#![expect(
    clippy::expect_used,
    reason = "the harness fails the running test by panicking, naming the step"
)]

pub mod capture;
pub mod chdb;
pub mod clickhouse;
pub mod cluster;
pub mod faults;
pub mod fixtures;
pub mod procs;
pub mod prometheus;
pub mod systemd;
pub mod tls;

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long the daemon may take to load and attach its probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to flush and exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// How much of the daemon's output and events a failure message shows.
const HEAD_LINES: usize = 10;
const TAIL_LINES: usize = 30;
const TAIL_EVENTS: usize = 15;

/// Whether this test can load BPF programs here (root, and kernel BTF). When it cannot: with
/// `NHISCOPE_REQUIRE_BPF=1` (set by `cargo xtask test`, so in CI) it panics with the reason,
/// otherwise it prints `skipping: <why>` and returns false, and the test returns early.
pub fn require_root_bpf() -> bool {
    let why = if !is_root() {
        Some("not root (loading BPF programs needs CAP_BPF and CAP_PERFMON)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if env::var_os("NHISCOPE_REQUIRE_BPF").is_some_and(|v| v == "1") => {
            panic!("NHISCOPE_REQUIRE_BPF=1 but this test cannot run: {why}")
        }
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `nhiscope` binary under test; panics with how to build it when it is missing.
pub fn nhiscope_bin() -> PathBuf {
    let bin = match env::var_os("NHISCOPE_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => {
            let exe = env::current_exe()
                .unwrap_or_else(|e| panic!("cannot find the test executable's path: {e}"));
            bin_for_test_exe(&exe)
        }
    };
    assert!(
        bin.is_file(),
        "the nhiscope binary is missing at {}: build it with `cargo xtask build` (or point \
         NHISCOPE_BIN at it)",
        bin.display()
    );
    bin
}

/// `target/<profile>/nhiscope` for a test executable in `target/<profile>/deps/`.
fn bin_for_test_exe(exe: &Path) -> PathBuf {
    let mut dir = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join("nhiscope")
}

/// `nhiscope ARGS`, run to completion, with no ClickHouse settings from the environment (a
/// developer's own ClickHouse must not change what the arguments mean).
pub fn run_nhiscope<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(nhiscope_bin())
        .args(args)
        .env_remove("NHISCOPE_CLICKHOUSE_URL")
        .env_remove("NHISCOPE_CLICKHOUSE_USER")
        .env_remove("NHISCOPE_CLICKHOUSE_PASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("cannot run nhiscope: {e}"))
}

/// A finished command's standard error, as text.
pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host).
pub fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup v2 hierarchy is mounted")
}

/// A fresh, empty directory `/tmp/nhiscope-tests/<name>-<pid>-<n>`, unique within this run.
/// It is left in place after the test, for a look at what a failed test left behind.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new("/tmp/nhiscope-tests").join(format!("{name}-{}-{n}", std::process::id()));
    // A previous run whose pid was the same left it: start empty.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A running `nhiscope daemon` writing JSON lines to a file of its own. Killed on drop.
pub struct Daemon {
    /// `None` once `stop` has reaped it.
    child: Mutex<Option<Child>>,
    pid: u32,
    dir: PathBuf,
    events_path: PathBuf,
    /// stdout and stderr lines, in arrival order; stdout lines start with `stdout: `.
    output: Arc<Mutex<Vec<String>>>,
    events: Mutex<EventLog>,
}

impl Daemon {
    /// Writes `registry_yaml` into a fresh directory, starts the daemon on it with
    /// `--json <dir>/events.jsonl` and `--live-socket <dir>/live.sock` (each daemon its own, so
    /// that tests run side by side), and returns once it printed `ready` on stderr.
    #[track_caller]
    pub fn start(registry_yaml: &str) -> Daemon {
        Self::start_with(registry_yaml, &[])
    }

    /// [`Daemon::start`] with `extra` arguments for `nhiscope daemon`.
    #[track_caller]
    pub fn start_with(registry_yaml: &str, extra: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_wrapped(&[], registry_yaml, extra)
    }

    /// [`Daemon::start_with`], the daemon started through `wrapper` (a command and its
    /// arguments, e.g. `setpriv --bounding-set ...`), which runs it as its last arguments.
    #[track_caller]
    pub fn start_wrapped(
        wrapper: &[&std::ffi::OsStr],
        registry_yaml: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Daemon {
        let dir = temp_dir("daemon");
        let registry = dir.join("registry.yaml");
        fs::write(&registry, registry_yaml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", registry.display()));
        let events_path = dir.join("events.jsonl");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--registry".as_ref(),
            registry.as_os_str(),
            "--json".as_ref(),
            events_path.as_os_str(),
        ];
        let socket = dir.join("live.sock");
        args.extend(["--live-socket".as_ref(), socket.as_os_str()]);
        args.extend_from_slice(extra);
        Self::start_args_wrapped(wrapper, &dir, &events_path, &args)
    }

    /// `nhiscope daemon ARGS`, exactly those (a `--config` file, say), in `dir`, whose events
    /// are expected in `events_path`; returns once it printed `ready`.
    #[track_caller]
    pub fn start_args(dir: &Path, events_path: &Path, args: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_args_wrapped(&[], dir, events_path, args)
    }

    /// [`Daemon::start_args`] through `wrapper` (see [`Daemon::start_wrapped`]).
    #[track_caller]
    fn start_args_wrapped(
        wrapper: &[&std::ffi::OsStr],
        dir: &Path,
        events_path: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Daemon {
        let bin = nhiscope_bin();
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .arg("daemon")
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("NHISCOPE_CLICKHOUSE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            collect_lines(stderr, "", Arc::clone(&output));
        }
        if let Some(stdout) = child.stdout.take() {
            collect_lines(stdout, "stdout: ", Arc::clone(&output));
        }
        let daemon = Daemon {
            pid: child.id(),
            child: Mutex::new(Some(child)),
            dir: dir.to_owned(),
            events_path: events_path.to_owned(),
            output,
            events: Mutex::new(EventLog::default()),
        };
        daemon.wait_ready();
        daemon
    }

    /// Sends `signal` to the daemon (SIGHUP, SIGUSR1...).
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid)
            .unwrap_or_else(|_| panic!("pid {} does not fit pid_t", self.pid));
        self.assert_running("before a signal was sent");
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet
        // reaped (assert_running saw it run and only `stop` reaps it), so it was not reused.
        if unsafe { libc::kill(pid, signal) } != 0 {
            panic!(
                "kill({signal}) failed: {}\n{}",
                std::io::Error::last_os_error(),
                self.report()
            );
        }
    }

    /// The first output line (stderr, or stdout prefixed `stdout: `) after the first `skip`
    /// for which `pred` holds; panics after `timeout`, or as soon as the daemon dies, with its
    /// output.
    #[track_caller]
    pub fn wait_output(
        &self,
        timeout: Duration,
        skip: usize,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = lock(&self.output).iter().skip(skip).find(|l| pred(l)) {
                return l.clone();
            }
            self.assert_running("while a test waited for a line of output");
            if started.elapsed() > timeout {
                panic!(
                    "no matching output line within {timeout:?}\n{}",
                    self.report()
                );
            }
            thread::sleep(POLL);
        }
    }

    #[track_caller]
    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if lock(&self.output)
                .iter()
                .any(|l| !l.starts_with("stdout: ") && l.contains("ready"))
            {
                return;
            }
            self.assert_running("before it was ready");
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "nhiscope did not print `ready` within {READY_TIMEOUT:?}\n{}",
                    self.report()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory holding its registry and its events file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The JSON-lines file it writes events to.
    pub fn events_path(&self) -> &Path {
        &self.events_path
    }

    /// Its live feed's socket (`nhiscope tui --socket`), listening once it is ready.
    pub fn live_socket(&self) -> PathBuf {
        self.dir.join("live.sock")
    }

    /// Its output so far (stderr lines; stdout lines prefixed with `stdout: `).
    pub fn output(&self) -> Vec<String> {
        lock(&self.output).clone()
    }

    /// Every event written so far, in order.
    #[track_caller]
    pub fn events(&self) -> Vec<Value> {
        self.refresh();
        lock(&self.events).events.clone()
    }

    /// The first event, already written or still to come, for which `pred` holds. Panics after
    /// `timeout`, or as soon as the daemon dies, with its output and its last events.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut seen = 0;
        loop {
            self.refresh();
            {
                let log = lock(&self.events);
                if let Some(e) = log.events[seen..].iter().find(|e| pred(e)) {
                    return e.clone();
                }
                seen = log.events.len();
            }
            self.assert_running("while a test waited for an event");
            if started.elapsed() > timeout {
                panic!(
                    "no matching event within {timeout:?} ({seen} events seen)\n{}",
                    self.report()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and waits for the daemon to exit (it must flush and exit 0). Panics if it
    /// is still running after `STOP_TIMEOUT` (it is then killed).
    #[track_caller]
    /// [`Daemon::stop`], then everything it printed (its last lines included, read to the end).
    pub fn stop_with_output(self) -> (ExitStatus, Vec<String>) {
        let output = Arc::clone(&self.output);
        let status = self.stop();
        // The readers finish when the pipes close, a moment after the exit.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !lock(&output).iter().any(|l| l.contains("stopping:")) {
            thread::sleep(POLL);
        }
        let lines = lock(&output).clone();
        (status, lines)
    }

    pub fn stop(self) -> ExitStatus {
        let Some(mut child) = lock(&self.child).take() else {
            panic!("nhiscope was already reaped");
        };
        let pid = libc::pid_t::try_from(self.pid)
            .unwrap_or_else(|_| panic!("pid {} does not fit pid_t", self.pid));
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet
        // reaped (we hold its `Child`), so it cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            panic!(
                "kill(SIGTERM) failed: {}\n{}",
                std::io::Error::last_os_error(),
                self.report()
            );
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if started.elapsed() > STOP_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nhiscope still ran {STOP_TIMEOUT:?} after SIGTERM (killed)\n{}",
                        self.report()
                    );
                }
                Ok(None) => thread::sleep(POLL),
                Err(e) => panic!("waiting for nhiscope: {e}"),
            }
        }
    }

    /// Panics if the daemon has exited.
    #[track_caller]
    fn assert_running(&self, when: &str) {
        let status = match lock(&self.child).as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return,
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("unknown status ({e})"),
            None => "reaped by stop()".to_owned(),
        };
        // Give the reader threads a moment to collect its last words.
        thread::sleep(Duration::from_millis(100));
        panic!("nhiscope exited {when}: {status}\n{}", self.report());
    }

    #[track_caller]
    fn refresh(&self) {
        let result = lock(&self.events).refresh(&self.events_path);
        if let Err(e) = result {
            panic!("{e}\n{}", self.report());
        }
    }

    /// What a failure message shows: the first and last lines of the daemon's output (the
    /// first error often comes before a long verifier log) and its last events. The whole output
    /// is also saved as `output.log` in its directory.
    fn report(&self) -> String {
        let output = lock(&self.output);
        let log_file = self.dir.join("output.log");
        let _ = fs::write(&log_file, output.join("\n") + "\n");
        let mut report = format!(
            "--- nhiscope output ({} lines, all in {}):\n",
            output.len(),
            log_file.display()
        );
        let (head, tail) = if output.len() > HEAD_LINES + TAIL_LINES {
            (HEAD_LINES, output.len() - TAIL_LINES)
        } else {
            (output.len(), output.len())
        };
        for line in &output[..head] {
            report.push_str(line);
            report.push('\n');
        }
        if tail > head {
            report.push_str(&format!("[... {} lines ...]\n", tail - head));
        }
        for line in &output[tail..] {
            report.push_str(line);
            report.push('\n');
        }
        drop(output);
        // The log may be what failed: do not panic again while reporting.
        let log = self.events.try_lock().ok();
        let events = log.as_ref().map_or(&[][..], |l| &l.events[..]);
        let from = events.len().saturating_sub(TAIL_EVENTS);
        report.push_str(&format!(
            "--- last {} of {} events:\n",
            events.len() - from,
            events.len()
        ));
        for e in &events[from..] {
            report.push_str(&e.to_string());
            report.push('\n');
        }
        report
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `stream` line by line on a thread of its own into `into` (so the pipe never fills).
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    prefix: &'static str,
    into: Arc<Mutex<Vec<String>>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    lock(&into).push(format!("{prefix}{text}"));
                }
            }
        }
    });
}

/// A lock that survives a panic of another holder: the data are logs, still worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The events file read incrementally: complete lines only, since the daemon may be in the
/// middle of writing the last one.
#[derive(Default)]
struct EventLog {
    /// Bytes of the file consumed so far (always at a line boundary).
    offset: u64,
    events: Vec<Value>,
}

impl EventLog {
    fn refresh(&mut self, path: &Path) -> Result<(), String> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            // The daemon may create it only when it writes the first event.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut buf))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (events, consumed) =
            parse_complete_lines(&buf).map_err(|e| format!("{}: {e}", path.display()))?;
        self.events.extend(events);
        self.offset += consumed as u64;
        Ok(())
    }
}

/// Parses the complete (newline-terminated) lines of `buf` as JSON values, skipping blank
/// ones; returns them and how many bytes they took. A trailing partial line is left for later.
fn parse_complete_lines(buf: &[u8]) -> Result<(Vec<Value>, usize), String> {
    let consumed = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut events = Vec::new();
    for line in buf[..consumed].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice(line).map_err(|e| {
            format!(
                "a line is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            )
        })?;
        events.push(value);
    }
    Ok((events, consumed))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_partial_last_line_waits_for_its_end() {
        let (events, consumed) =
            parse_complete_lines(b"{\"kind\":\"open\"}\n\n{\"kind\":\"conn").unwrap();
        assert_eq!(events, [serde_json::json!({"kind": "open"})]);
        assert_eq!(consumed, 17);
        assert_eq!(parse_complete_lines(b"{\"a\":").unwrap().1, 0);
    }

    #[test]
    fn a_complete_line_that_is_not_json_is_an_error() {
        let err = parse_complete_lines(b"{\"a\":1}\nnot json\n").unwrap_err();
        assert!(err.contains("not json"), "{err}");
    }

    #[test]
    fn the_log_is_read_incrementally_across_a_line_being_written() {
        let path = temp_dir("harness-log").join("events.jsonl");
        let mut log = EventLog::default();
        log.refresh(&path).unwrap();
        assert!(log.events.is_empty(), "a missing file is no events yet");

        let mut f = File::create(&path).unwrap();
        f.write_all(b"{\"n\":1}\n{\"n\":").unwrap();
        log.refresh(&path).unwrap();
        assert_eq!(log.events, [serde_json::json!({"n": 1})]);

        f.write_all(b"2}\n{\"n\":3}\n").unwrap();
        log.refresh(&path).unwrap();
        let ns: Vec<_> = log
            .events
            .iter()
            .map(|e| e["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [1, 2, 3]);
    }

    #[test]
    fn the_binary_is_found_next_to_the_profile_directory() {
        assert_eq!(
            bin_for_test_exe(Path::new("/w/target/debug/deps/probes-0123abcd")),
            Path::new("/w/target/debug/nhiscope")
        );
        assert_eq!(
            bin_for_test_exe(Path::new("/w/target/release/deps/cli-0123abcd")),
            Path::new("/w/target/release/nhiscope")
        );
    }

    #[test]
    fn temp_dirs_are_fresh_and_distinct() {
        let a = temp_dir("harness-unique");
        let b = temp_dir("harness-unique");
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        assert_eq!(fs::read_dir(&a).unwrap().count(), 0);
    }
}
