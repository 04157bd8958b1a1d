//! End to end, as root: the real daemon with its real probes, and real processes opening
//! registered credentials and connecting out. Each test asserts the exact event.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nhiscope_tests::{
    procs::{canon, connect_code, run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A test's own directory with a credential file in it, and a registry naming it.
struct Fixture {
    dir: PathBuf,
    cred: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
        let store = dir.join("store");
        std::fs::create_dir_all(&store).expect("store dir");
        let cred = store.join("api-token");
        std::fs::write(&cred, "not-a-real-secret\n").expect("credential file");
        Self { dir, cred }
    }

    /// A registry with NHI `test-api` owning the credential; `extra` is appended to its entry.
    fn registry(&self, extra: &str) -> String {
        format!(
            "nhis:\n  - id: test-api\n    owner: team-test\n    credentials:\n      - {}\n{extra}",
            self.cred.display()
        )
    }
}

fn is_open_of(e: &Value, pid: u32, path: &Path) -> bool {
    e["kind"] == "open" && e["pid"] == pid && e["path"] == path.to_str().expect("utf8")
}

#[test]
fn open_by_absolute_path() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("abs");
    let d = Daemon::start(&f.registry(""));
    let pid = run(Command::new("cat")
        .arg(&f.cred)
        .stdout(std::process::Stdio::null()));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["exe"], canon("cat"));
    assert_eq!(e["comm"], "cat");
    assert_eq!(e["uid"], 0);
    assert_eq!(e["ppid"], std::process::id());
    assert_eq!(
        e["cmdline"],
        serde_json::json!(["cat", f.cred.to_str().expect("utf8")])
    );
    assert!(e["result"].as_i64().expect("result") >= 0, "{e}");
    assert_eq!(e["nhi"], "test-api");
    assert_eq!(e["verdict"], "ok");
    assert_eq!(e["drift"], serde_json::json!([]));
    assert_eq!(e["syscall"], "openat");
    assert!(e["ts"].as_str().expect("ts").ends_with('Z'));
    assert!(!e["host"].as_str().expect("host").is_empty());
}

#[test]
fn open_by_relative_path_resolves_against_the_cwd() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("rel");
    let d = Daemon::start(&f.registry(""));
    let pid = run(Command::new("cat")
        .arg("api-token")
        .current_dir(f.dir.join("store"))
        .stdout(std::process::Stdio::null()));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["path_arg"], "api-token");
    assert_eq!(e["nhi"], "test-api");
    assert_eq!(e["verdict"], "ok");
    // And after a `cd` inside a shell, with `..` in the path.
    let pid = run(Command::new("sh")
        .args([
            "-c",
            "cd store/.. && exec cat ./store/../store/api-token >/dev/null",
        ])
        .current_dir(&f.dir));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["path_arg"], "./store/../store/api-token");
    assert_eq!(e["exe"], canon("cat"));
}

#[test]
fn open_through_a_symlink_is_the_credential_it_leads_to() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("symlink");
    // An app reads ~/.aws/credentials-style path that is a link to the registered file.
    let aws = f.dir.join("home/.aws");
    std::fs::create_dir_all(&aws).expect("dir");
    let link = aws.join("credentials");
    std::os::unix::fs::symlink(&f.cred, &link).expect("symlink");
    let d = Daemon::start(&f.registry(""));
    let pid = run(Command::new("cat")
        .arg(&link)
        .stdout(std::process::Stdio::null()));
    // The event names the file the kernel opened, and how the process asked for it.
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["path_arg"], link.to_str().expect("utf8"));
    assert!(e.get("target").is_none(), "{e}");
    assert_eq!(e["nhi"], "test-api");
    assert_eq!(e["verdict"], "ok");
}

#[test]
fn a_process_that_exits_at_once_is_still_known() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("short");
    let d = Daemon::start(&f.registry(""));
    // The shell opens the file itself (a redirection) and exits right away.
    let script = format!("exec 3< {}", f.cred.display());
    let pid = run(Command::new("sh").args(["-c", &script]));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["exe"], canon("sh"));
    assert_eq!(e["cmdline"], serde_json::json!(["sh", "-c", script]));
    assert_eq!(e["ppid"], std::process::id());
    assert_eq!(e["nhi"], "test-api");
    // A holder's exit is reported too.
    d.wait_for(WAIT, |e| {
        e["kind"] == "exit" && e["pid"] == pid && e["nhi"] == "test-api"
    });
}

#[test]
fn legacy_open_syscall() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("legacy");
    let d = Daemon::start(&f.registry(""));
    // SYS_open is 2 on x86_64.
    let code = format!(
        "import ctypes,os\nfd=ctypes.CDLL(None,use_errno=True).syscall(2,b'{}',os.O_RDONLY)\nassert fd>=0\n",
        f.cred.display()
    );
    let pid = run(Command::new(PYTHON).args(["-c", &code]));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["syscall"], "open");
    assert_eq!(e["exe"], canon(PYTHON));
    assert!(e["result"].as_i64().expect("result") >= 0);
    assert_eq!(e["nhi"], "test-api");
}

#[test]
fn a_denied_open_carries_eacces_and_is_drift_for_a_reader_out_of_scope() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("eacces");
    std::fs::set_permissions(&f.cred, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let d = Daemon::start(&f.registry("    readers:\n      uid: [0]\n"));
    let pid = run(Command::new("cat")
        .arg(&f.cred)
        .uid(65534)
        .gid(65534)
        .stderr(std::process::Stdio::null()));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["result"], -13);
    assert_eq!(e["error"], "EACCES");
    assert_eq!(e["uid"], 65534);
    assert_eq!(e["nhi"], "test-api");
    assert_eq!(e["verdict"], "drift");
    assert_eq!(e["drift"], serde_json::json!(["reader_out_of_scope"]));
    let reason = e["reason"].as_str().expect("reason");
    assert!(
        reason.contains("test-api") && reason.contains("uid 65534"),
        "{reason}"
    );
    // Root, a declared reader, is fine.
    let pid = run(Command::new("cat")
        .arg(&f.cred)
        .stdout(std::process::Stdio::null()));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    assert_eq!(e["verdict"], "ok");
}

#[test]
fn unwatched_opens_are_not_reported_and_unowned_watched_ones_are_unregistered() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("unreg");
    let plain = f.dir.join("store/notes.txt");
    std::fs::write(&plain, "x").expect("file");
    let env = f.dir.join("proj/.env");
    std::fs::create_dir_all(env.parent().expect("parent")).expect("dir");
    std::fs::write(&env, "A=1\n").expect(".env");
    let d = Daemon::start(&f.registry(""));
    let quiet = run(Command::new("cat")
        .arg(&plain)
        .stdout(std::process::Stdio::null()));
    let pid = run(Command::new("cat")
        .arg(&env)
        .stdout(std::process::Stdio::null()));
    let e = d.wait_for(WAIT, |e| is_open_of(e, pid, &env));
    assert_eq!(e["verdict"], "unregistered");
    assert_eq!(e["nhi"], Value::Null);
    // The .env open came after the plain one: by now the plain one would have been written.
    assert!(
        !d.events().iter().any(|e| e["pid"] == quiet),
        "an unwatched open was reported"
    );
}

/// Reads the credential, then connects to each address in turn, from one process.
fn read_then_connect(cred: &Path, targets: &[(String, u16)]) -> u32 {
    let code = format!(
        "open('{}').close()\n{}",
        cred.display(),
        connect_code(targets)
    );
    run(Command::new(PYTHON).args(["-c", &code]))
}

#[test]
fn connections_by_a_holder_over_ipv4_and_ipv6_are_checked_against_endpoints() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("connect");
    let ok4 = TcpListener::bind("127.0.0.3:0").expect("listen 127.0.0.3");
    let bad4 = TcpListener::bind("127.0.0.4:0").expect("listen 127.0.0.4");
    let ok6 = TcpListener::bind("[::1]:0").expect("listen ::1");
    let (p_ok4, p_bad4, p_ok6) = (
        ok4.local_addr().expect("addr").port(),
        bad4.local_addr().expect("addr").port(),
        ok6.local_addr().expect("addr").port(),
    );
    let d = Daemon::start(&f.registry(&format!(
        "    endpoints:\n      - cidr: 127.0.0.3/32\n        port: {p_ok4}\n      - cidr: ::1/128\n        ports: [{p_ok6}]\n"
    )));
    // A process that never read the credential is not a holder: its connects are not reported.
    drop(TcpStream::connect(("127.0.0.4", p_bad4)).expect("connect"));
    let pid = read_then_connect(
        &f.cred,
        &[
            ("127.0.0.3".into(), p_ok4),
            ("127.0.0.4".into(), p_bad4),
            ("::1".into(), p_ok6),
        ],
    );
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["daddr"] == "127.0.0.3"
    });
    assert_eq!(e["dport"], p_ok4);
    assert_eq!(e["nhi"], "test-api");
    assert_eq!(e["verdict"], "ok");
    assert_eq!(e["exe"], canon(PYTHON));
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["daddr"] == "127.0.0.4"
    });
    assert_eq!(e["dport"], p_bad4);
    assert_eq!(e["verdict"], "drift");
    assert_eq!(e["drift"], serde_json::json!(["endpoint_out_of_scope"]));
    assert!(e["reason"]
        .as_str()
        .expect("reason")
        .contains(&format!("127.0.0.4:{p_bad4}")));
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["daddr"] == "::1"
    });
    assert_eq!(e["dport"], p_ok6);
    assert_eq!(e["verdict"], "ok");
    assert_eq!(e["dns_names"], serde_json::json!([]));
    let me = std::process::id();
    assert!(!d
        .events()
        .iter()
        .any(|e| e["kind"] == "connect" && e["pid"] == me));
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("term");
    let d = Daemon::start(&f.registry(""));
    let pid = run(Command::new("cat")
        .arg(&f.cred)
        .stdout(std::process::Stdio::null()));
    d.wait_for(WAIT, |e| is_open_of(e, pid, &f.cred));
    let status = d.stop();
    assert_eq!(status.code(), Some(0));
}

/// Once `ready`, every thread of the daemon holds CAP_BPF and CAP_DAC_READ_SEARCH only (not
/// CAP_SYS_PTRACE: the kernel names executables and files itself), in its effective, permitted and bounding sets, and can gain no
/// other (no_new_privs). The other tests run the daemon so reduced, reloads included.
#[test]
fn after_attaching_the_daemon_keeps_only_the_capabilities_it_needs() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("caps");
    let d = Daemon::start(&f.registry(""));
    let ptrace = 1u64 << 19;
    let expected = nhiscope::app::privileges::kept_mask(
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .expect("cap_last_cap")
            .trim()
            .parse()
            .expect("a number"),
    );
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).expect("tasks");
    let mut threads = 0;
    for t in tasks {
        let status =
            std::fs::read_to_string(t.expect("task").path().join("status")).expect("status");
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        };
        let mask = |name: &str| u64::from_str_radix(&field(name), 16).expect("hex");
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(mask(set), expected, "{set} of a daemon thread:\n{status}");
            assert_eq!(mask(set) & ptrace, 0, "CAP_SYS_PTRACE kept");
        }
        assert_eq!(mask("CapInh:"), 0);
        assert_eq!(mask("CapAmb:"), 0);
        assert_eq!(field("NoNewPrivs:"), "1");
        threads += 1;
    }
    assert!(threads >= 1);
    // And it still works: a credential open is reported.
    let pid = run(Command::new("cat")
        .arg(&f.cred)
        .stdout(std::process::Stdio::null()));
    d.wait_for(Duration::from_secs(5), |e| {
        e["kind"] == "open" && e["pid"] == pid
    });
}
