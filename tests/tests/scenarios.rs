//! Scenarios, as root: real processes act out each kind of drift and its benign twin, and each
//! test asserts the exact verdict, drift kinds and NHI on the exact event.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{
    cgroup2_root,
    procs::{connect_code, run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A directory with one credential file, `<dir>/secrets/token`.
fn credential(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
    std::fs::create_dir_all(dir.join("secrets")).expect("dir");
    let cred = dir.join("secrets/token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    (dir, cred)
}

fn registry(cred: &Path, extra: &str) -> String {
    format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n{extra}",
        cred.display()
    )
}

fn open_of(e: &Value, pid: u32, path: &Path) -> bool {
    e["kind"] == "open" && e["pid"] == pid && e["path"] == path.to_str().expect("utf8")
}

fn listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// For the holder scenarios: NHI `svc` with a credential and loopback endpoints, the daemon
/// watching it, a listener on `addr`, and `sh -c SCRIPT` with `{cred}` and `{connect}` (a Python
/// command that connects to the listener) filled in, run to completion. Returns the daemon, the
/// credential, the port and the shell's pid.
struct Holding {
    d: Daemon,
    cred: PathBuf,
    port: u16,
    shell: u32,
    _dir: PathBuf,
    _listener: TcpListener,
}

fn holding(name: &str, addr: &str, script: &str, stdout: Stdio) -> Holding {
    holding_in("sh", name, addr, script, stdout)
}

/// [`holding`] with another shell.
fn holding_in(shell: &str, name: &str, addr: &str, script: &str, stdout: Stdio) -> Holding {
    let (dir, cred) = credential(name);
    let (listener, port) = listener(addr);
    let d = Daemon::start(&registry(
        &cred,
        "    endpoints:\n      - cidr: 127.0.0.0/8\n",
    ));
    let py = connect_code(&[(addr.into(), port)]);
    let script = script
        .replace("{cred}", &cred.display().to_string())
        .replace("{connect}", &format!("{PYTHON} -c \"{py}\""));
    let shell = run(Command::new(shell).args(["-c", &script]).stdout(stdout));
    Holding {
        d,
        cred,
        port,
        shell,
        _dir: dir,
        _listener: listener,
    }
}

/// The shell's reader opened the credential, and no connection to the listener was attributed
/// to the NHI (a later open proves the daemon got past the shell's connection).
fn assert_no_holder(h: &Holding, why: &str) {
    let reader =
        h.d.wait_for(WAIT, |e| e["kind"] == "open" && e["ppid"] == h.shell);
    assert_eq!(reader["nhi"], "svc");
    let sentinel = cat(&h.cred);
    h.d.wait_for(WAIT, |e| open_of(e, sentinel, &h.cred));
    assert!(
        !h.d.events()
            .iter()
            .any(|e| e["kind"] == "connect" && e["dport"] == h.port),
        "{why}"
    );
}

/// Opens `path` in a process whose verdict the scenario decides on; returns its pid.
fn cat(path: &Path) -> u32 {
    run(Command::new("cat").arg(path).stdout(Stdio::null()))
}

#[test]
fn command_substitution_makes_the_parents_later_children_holders() {
    if !require_root_bpf() {
        return;
    }
    // TOKEN=$(cat file); then a child of the shell uses it.
    let h = holding(
        "subst",
        "127.0.0.21",
        "TOKEN=$(cat {cred}); {connect}; true",
        Stdio::inherit(),
    );
    let e = h.d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["ppid"] == h.shell && e["dport"] == h.port
    });
    assert_eq!(e["nhi"], "svc");
    assert_eq!(e["verdict"], "ok");
    assert_eq!(e["daddr"], "127.0.0.21");
}

#[test]
fn process_substitution_makes_the_shell_a_holder() {
    if !require_root_bpf() {
        return;
    }
    // bash opens `<(cat file)`'s pipe at fd 63 and `exec 40<` moves it to 40, far above the
    // standard descriptors, where it stays until `read` (after `cat` has opened the credential)
    // briefly duplicates it onto fd 0.
    let h = holding_in(
        "bash",
        "subst-proc",
        "127.0.0.24",
        "exec 40< <(cat {cred}); sleep 0.3; read -r TOKEN <&40; exec 40<&-; {connect}; true",
        Stdio::inherit(),
    );
    let e = h.d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["ppid"] == h.shell && e["dport"] == h.port
    });
    assert_eq!(e["nhi"], "svc");
    assert_eq!(e["verdict"], "ok");
}

/// A Python parent that reads a `cat` of the credential through a pipe it keeps at descriptor
/// `fd`, then connects to `addr:port` itself; returns its pid.
fn read_through_fd(cred: &Path, fd: u32, addr: &str, port: u16) -> u32 {
    let code = format!(
        "import os, resource, socket, subprocess\n\
         soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, {fd} + 1), hard))\n\
         r, w = os.pipe()\n\
         os.dup2(r, {fd}); os.close(r)\n\
         p = subprocess.Popen(['cat', '{cred}'], stdout=w)\n\
         os.close(w)\n\
         while os.read({fd}, 4096): pass\n\
         p.wait()\n\
         socket.create_connection(('{addr}', {port})).close()\n",
        cred = cred.display()
    );
    run(Command::new(PYTHON).args(["-c", &code]))
}

#[test]
fn a_parent_reading_a_credential_through_a_high_descriptor_becomes_a_holder() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("high-fd");
    let (_l, port) = listener("127.0.0.25");
    let args = ["--metrics", "127.0.0.1:0"].map(std::ffi::OsStr::new);
    let d = Daemon::start_with(
        &registry(&cred, "    endpoints:\n      - cidr: 127.0.0.0/8\n"),
        &args,
    );
    // Inside the descriptors the kernel compares (its table has 1024 slots): found there.
    let parent = read_through_fd(&cred, 900, "127.0.0.25", port);
    let e = d.wait_for(WAIT, |e| e["kind"] == "connect" && e["pid"] == parent);
    assert_eq!(e["nhi"], "svc", "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
    let metrics = nhiscope_tests::prometheus::scrape(nhiscope_tests::prometheus::metrics_addr(&d));
    assert_eq!(
        nhiscope_tests::prometheus::sample(&metrics, "nhiscope_parent_pipe_undetermined_total"),
        Some(0.0),
        "{metrics}"
    );
    // Above them (a table of 8192 slots): the parent cannot be ruled out, so it holds the NHI,
    // and the metric says the kernel could not tell.
    let parent = read_through_fd(&cred, 5000, "127.0.0.25", port);
    let e = d.wait_for(WAIT, |e| e["kind"] == "connect" && e["pid"] == parent);
    assert_eq!(e["nhi"], "svc", "{e}");
    nhiscope_tests::prometheus::wait_scrape(
        nhiscope_tests::prometheus::metrics_addr(&d),
        WAIT,
        |m| {
            nhiscope_tests::prometheus::sample(m, "nhiscope_parent_pipe_undetermined_total")
                == Some(1.0)
        },
    );
}

#[test]
fn a_parent_that_takes_the_read_end_after_a_first_read_becomes_a_holder() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("late-reader");
    let (_l, port) = listener("127.0.0.26");
    let d = Daemon::start(&registry(
        &cred,
        "    endpoints:\n      - cidr: 127.0.0.0/8\n",
    ));
    // The child reads the credential once while its parent holds no read end of its stdout,
    // then, once the parent has reopened the pipe through /proc, reads it again into it.
    let child = format!(
        "import sys\n\
         open('{cred}').read()\n\
         sys.stderr.write('1'); sys.stderr.flush()\n\
         sys.stdin.buffer.read(1)\n\
         sys.stdout.write(open('{cred}').read()); sys.stdout.flush()\n",
        cred = cred.display()
    );
    let code = format!(
        "import os, socket, subprocess\n\
         r, w = os.pipe()\n\
         go_r, go_w = os.pipe()\n\
         c = subprocess.Popen(['{PYTHON}', '-c', {child:?}], stdout=w, stdin=go_r, stderr=subprocess.PIPE)\n\
         os.close(r); os.close(w); os.close(go_r)\n\
         c.stderr.read(1)\n\
         rd = os.open('/proc/%d/fd/1' % c.pid, os.O_RDONLY)\n\
         os.write(go_w, b'x')\n\
         data = os.read(rd, 4096)\n\
         c.wait()\n\
         socket.create_connection(('127.0.0.26', {port})).close()\n"
    );
    let parent = run(Command::new(PYTHON).args(["-c", &code]));
    let e = d.wait_for(WAIT, |e| e["kind"] == "connect" && e["pid"] == parent);
    assert_eq!(e["nhi"], "svc", "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
}

#[test]
fn a_shell_that_merely_started_a_reader_does_not_become_a_holder() {
    if !require_root_bpf() {
        return;
    }
    // The reader's output goes elsewhere: the shell never had the secret.
    let h = holding(
        "supervisor",
        "127.0.0.22",
        "cat {cred} >/dev/null; {connect}; true",
        Stdio::inherit(),
    );
    assert_no_holder(&h, "the shell's other child was attributed to the NHI");
}

#[test]
fn a_shell_that_shares_its_output_pipe_with_a_reader_does_not_become_a_holder() {
    if !require_root_bpf() {
        return;
    }
    // The reader writes into the pipe the shell itself writes to (as in `job | logger`): the
    // shell holds the pipe's write end, never its read end, so it never read the secret.
    let h = holding(
        "shared-pipe",
        "127.0.0.23",
        "cat {cred}; {connect}; true",
        Stdio::piped(),
    );
    assert_no_holder(
        &h,
        "the shell became a holder by sharing its stdout with the reader",
    );
}

#[test]
fn use_from_a_terminal_is_interactive_drift_and_a_service_session_is_not() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("pty");
    let d = Daemon::start(&registry(&cred, "    interactive: deny\n"));
    // `script` runs the command on a new pseudo-terminal: a human's session.
    let cmd = format!("cat {} >/dev/null", cred.display());
    let script = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "open"
            && e["path"] == cred.to_str().expect("utf8")
            && e["pid"] != script
            && e["comm"] == "cat"
    });
    assert_eq!(e["verdict"], "drift");
    assert_eq!(e["drift"], json!(["interactive_use"]));
    assert!(
        e["reason"].as_str().expect("reason").contains("terminal"),
        "{e}"
    );
    // Its twin, in a session without a terminal.
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["verdict"], "ok");
    assert_eq!(e["drift"], json!([]));
}

#[test]
fn expired_and_stale_credentials_are_drift_and_fresh_ones_are_not() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("lifetime");
    let fresh = dir.join("secrets/fresh-token");
    std::fs::write(&fresh, "x").expect("fresh");
    let old = dir.join("secrets/old-token");
    std::fs::write(&old, "x").expect("old");
    let st = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&old)
        .status()
        .expect("touch");
    assert!(st.success());
    let yaml = format!(
        "nhis:\n  - id: gone\n    credentials: [{}]\n    expires: 2020-01-01T00:00:00Z\n  \
         - id: rotated\n    credentials: [{}, {}]\n    max_age: 1day\n    expires: 2999-01-01T00:00:00Z\n",
        cred.display(),
        old.display(),
        fresh.display()
    );
    let d = Daemon::start(&yaml);
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(
        (e["nhi"].clone(), e["verdict"].clone()),
        (json!("gone"), json!("drift"))
    );
    assert_eq!(e["drift"], json!(["expired"]));
    assert!(
        e["reason"]
            .as_str()
            .expect("reason")
            .contains("expired at 2020-01-01"),
        "{e}"
    );
    let pid = cat(&old);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &old));
    assert_eq!(
        (e["nhi"].clone(), e["drift"].clone()),
        (json!("rotated"), json!(["stale_credential"]))
    );
    let pid = cat(&fresh);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &fresh));
    assert_eq!(
        (e["nhi"].clone(), e["verdict"].clone()),
        (json!("rotated"), json!("ok"))
    );
}

#[test]
fn a_reader_outside_the_declared_readers_is_drift_and_a_declared_one_is_not() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("readers");
    let d = Daemon::start(&registry(
        &cred,
        &format!("    readers:\n      exe: [{PYTHON}*]\n"),
    ));
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["drift"], json!(["reader_out_of_scope"]));
    assert!(
        e["reason"]
            .as_str()
            .expect("reason")
            .contains("/usr/bin/cat"),
        "{e}"
    );
    let pid =
        run(Command::new(PYTHON).args(["-c", &format!("open('{}').close()", cred.display())]));
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["verdict"], "ok");
}

/// A DNS server on loopback that answers `api.nhiscope.test` with 127.0.0.23.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(listen: &str) -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--pid-file=",
                "--user=root",
                &format!("--listen-address={listen}"),
                "--address=/api.nhiscope.test/127.0.0.23",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (installed by `cargo xtask setup`)");
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python that asks `server` for `name` (type A), then connects to the answer on `port`, then
/// connects to `other` on `port` (an address no DNS answer named).
fn resolve_then_connect(cred: &Path, server: &str, name: &str, port: u16, other: &str) -> String {
    format!(
        r#"import socket, struct
open('{cred}').close()
q = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(l)]) + l.encode() for l in '{name}'.split('.')) + b'\x00' + struct.pack('>HH', 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(q, ('{server}', 53))
r = u.recv(512)
ip = socket.inet_ntoa(r[-4:])
s = socket.create_connection((ip, {port})); s.close()
s = socket.create_connection(('{other}', {port})); s.close()
"#,
        cred = cred.display()
    )
}

#[test]
fn hostname_endpoints_match_names_from_dns_answers_seen_on_the_host() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("dns");
    let _dns = Dnsmasq::start("127.0.0.153");
    let (_a, port) = listener("127.0.0.23");
    let _b = TcpListener::bind(("127.0.0.24", port)).expect("listen on 127.0.0.24");
    let d = Daemon::start(&registry(
        &cred,
        &format!("    endpoints:\n      - host: \"*.nhiscope.test\"\n        port: {port}\n"),
    ));
    let code = resolve_then_connect(
        &cred,
        "127.0.0.153",
        "api.nhiscope.test",
        port,
        "127.0.0.24",
    );
    let pid = run(Command::new(PYTHON).args(["-c", &code]));
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["daddr"] == "127.0.0.23"
    });
    assert_eq!(e["dns_names"], json!(["api.nhiscope.test"]));
    assert_eq!(e["verdict"], "ok", "{e}");
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["daddr"] == "127.0.0.24"
    });
    assert_eq!(e["dns_names"], json!([]));
    assert_eq!(e["drift"], json!(["endpoint_out_of_scope"]));
}

#[test]
fn the_registry_reloads_on_change_and_an_invalid_one_is_refused() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("reload");
    let second = dir.join("secrets/second-key");
    std::fs::write(&second, "x").expect("second");
    let d = Daemon::start(&registry(&cred, ""));
    let reg = d.dir().join("registry.yaml");
    // Not watched yet: the open passes unseen.
    let before = cat(&second);
    // A new registry with a second NHI, announced with SIGHUP.
    let yaml = format!(
        "{}  - id: added\n    credentials: [{}]\n",
        registry(&cred, ""),
        second.display()
    );
    std::fs::write(&reg, yaml).expect("write registry");
    // SAFETY: kill(2) on the daemon's pid.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    let after = loop_until_seen(&d, &second);
    assert_ne!(after, before);
    assert!(
        !d.events().iter().any(|e| e["pid"] == before),
        "opened before the reload"
    );
    // A broken registry is refused; the one in force stays.
    std::fs::write(&reg, "nhis:\n  - id: [\n").expect("write");
    // SAFETY: kill with plain integers: the daemon's pid and a signal number.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    let pid = cat(&second);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &second));
    assert_eq!(e["nhi"], "added");
    assert!(
        d.output()
            .iter()
            .any(|l| l.contains("previous one stays in force")),
        "{:?}",
        d.output()
    );
}

/// Open `path` until an event for it shows up (the reload happens asynchronously).
fn loop_until_seen(d: &Daemon, path: &Path) -> u32 {
    for _ in 0..50 {
        let pid = cat(path);
        std::thread::sleep(Duration::from_millis(100));
        if let Some(e) = d.events().into_iter().find(|e| open_of(e, pid, path)) {
            assert_eq!(e["nhi"], "added");
            return pid;
        }
    }
    panic!("{} never became watched after the reload", path.display());
}

#[test]
fn a_hard_link_and_a_bind_mount_in_a_private_mount_namespace_are_the_same_credential() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("alias");
    // A hard link elsewhere under a name no pattern watches: the kernel knows the inode.
    std::fs::create_dir_all(dir.join("copy/elsewhere")).expect("dir");
    let link = dir.join("copy/elsewhere/notes.txt");
    std::fs::hard_link(&cred, &link).expect("hard link");
    let d = Daemon::start(&registry(&cred, ""));
    let pid = cat(&link);
    // The event names the registered file, and the name it was reached by.
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["nhi"], "svc", "{e}");
    assert_eq!(e["target"], link.to_str().expect("utf8"), "{e}");
    assert_eq!(e["path_arg"], link.to_str().expect("utf8"), "{e}");
    assert!(e["inode"].as_u64().is_some(), "{e}");
    // A bind mount that only a private mount namespace sees.
    let inside = dir.join("ns/secrets");
    std::fs::create_dir_all(&inside).expect("dir");
    let script = format!(
        "mount --bind {} {} && cat {}/token >/dev/null",
        dir.join("secrets").display(),
        inside.display(),
        inside.display()
    );
    let pid = run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let seen = inside.join("token");
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "open" && e["path_arg"] == seen.to_str().expect("utf8") && e["ppid"] == pid
    });
    assert_eq!(e["nhi"], "svc", "{e}");
    assert_eq!(e["path"], cred.to_str().expect("utf8"), "{e}");
    // The real path as that namespace sees it, across the bind mount.
    assert_eq!(e["target"], seen.to_str().expect("utf8"), "{e}");
    assert_eq!(e["verdict"], "ok");
}

#[test]
fn readers_can_be_named_by_cgroup() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("cgroup");
    let name = format!("nhiscope-test-{}", std::process::id());
    let cg = cgroup2_root().join(&name);
    std::fs::create_dir_all(&cg).expect("create a cgroup");
    let d = Daemon::start(&registry(
        &cred,
        "    readers:\n      cgroup: [/nhiscope-test-*]\n",
    ));
    // Inside the cgroup: a declared reader.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec cat {} >/dev/null",
        cg.display(),
        cred.display()
    );
    let pid = run(Command::new("sh").args(["-c", &script]));
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["verdict"], "ok", "{e}");
    // Outside it: not.
    let pid = cat(&cred);
    let e = d.wait_for(WAIT, |e| open_of(e, pid, &cred));
    assert_eq!(e["drift"], json!(["reader_out_of_scope"]), "{e}");
    let _ = std::fs::remove_dir(&cg);
}
