//! Connections a process already has when it reads a credential, as root: real ssh against a
//! real sshd on loopback (ssh connects first and reads its key during authentication), and
//! Python clients that connect, close, inherit and then read. Each test asserts the exact
//! events of the exact process: judged at the read, marked `established_before_use`, or not
//! reported at all.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nhiscope_tests::{
    clickhouse::free_port,
    procs::{run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// An sshd of its own on 127.0.0.1, listening on two ports, that lets root in with one key.
struct Sshd {
    child: Child,
    ports: [u16; 2],
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nhiscope-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen -f {}", path.display());
}

impl Sshd {
    /// Starts sshd with `authorized` (a public key file) as root's only authorized key.
    fn start(dir: &Path, authorized: &Path) -> Sshd {
        keygen(&dir.join("host_key"));
        std::fs::copy(authorized, dir.join("authorized_keys")).expect("authorized_keys");
        // Privilege separation needs its empty directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let ports = [free_port(), free_port()];
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {}\nPort {}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {d}/sshd.pid\n",
                ports[0],
                ports[1],
                d = dir.display()
            ),
        )
        .expect("sshd_config");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("sshd.log"))
            .spawn()
            .expect("sshd (openssh-server)");
        let sshd = Sshd {
            child,
            ports,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + WAIT;
        for port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "sshd does not listen on {port}: {}",
                    std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        sshd
    }

    /// `ssh -i key -p port root@127.0.0.1 true`, to completion; its pid.
    fn login(&self, key: &Path, port: u16) -> u32 {
        let mut cmd = Command::new("/usr/bin/ssh");
        cmd.arg("-i")
            .arg(key)
            .args(["-F", "/dev/null", "-p", &port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["root@127.0.0.1", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("ssh.log")).expect("ssh.log"));
        run(&mut cmd)
    }
}

/// A deploy key registered as NHI `deploy` whose only endpoint is `127.0.0.1:allowed`.
fn deploy_registry(key: &Path, allowed: u16) -> String {
    format!(
        "nhis:\n  - id: deploy\n    credentials: [{}]\n    endpoints:\n      - cidr: 127.0.0.1/32\n        port: {allowed}\n",
        key.display()
    )
}

fn connects_of(d: &Daemon, pid: u32) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| e["kind"] == "connect" && e["pid"] == pid)
        .collect()
}

#[test]
fn an_ssh_deploy_key_is_judged_on_the_connection_ssh_made_before_reading_it() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("ssh-deploy")).expect("dir");
    let key = dir.join("deploy_key");
    keygen(&key);
    let other = dir.join("other.k");
    keygen(&other);
    let sshd = Sshd::start(&dir, &dir.join("deploy_key.pub"));
    let [allowed, undeclared] = sshd.ports;
    let d = Daemon::start(&deploy_registry(&key, allowed));

    // The declared endpoint: ssh connected before it read the key; judged at the read, ok.
    let ssh = sshd.login(&key, allowed);
    let read = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == ssh);
    assert_eq!(read["nhi"], "deploy", "{read}");
    let e = d.wait_for(WAIT, |e| e["kind"] == "connect" && e["pid"] == ssh);
    assert_eq!(e["established_before_use"], true, "{e}");
    assert_eq!(e["nhi"], "deploy", "{e}");
    assert_eq!(e["daddr"], "127.0.0.1", "{e}");
    assert_eq!(e["dport"], allowed, "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .expect("reason")
            .contains("had a connection open to 127.0.0.1"),
        "{e}"
    );

    // The same key against another sshd port: the connection is out of scope.
    let ssh2 = sshd.login(&key, undeclared);
    let e = d.wait_for(WAIT, |e| e["kind"] == "connect" && e["pid"] == ssh2);
    assert_eq!(e["established_before_use"], true, "{e}");
    assert_eq!(e["dport"], undeclared, "{e}");
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["drift"], json!(["endpoint_out_of_scope"]), "{e}");

    // ssh with a key nobody registered read no credential: its connection stays unjudged. A
    // later read proves the daemon got past it.
    let ssh3 = sshd.login(&other, allowed);
    let sentinel = run(Command::new("cat").arg(&key).stdout(Stdio::null()));
    d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == sentinel);
    assert_eq!(connects_of(&d, ssh3), Vec::<Value>::new());
    // Each holder's connection was reported once.
    assert_eq!(connects_of(&d, ssh).len(), 1);
    assert_eq!(connects_of(&d, ssh2).len(), 1);
}

/// A registry with NHI `svc` (credential `cred`), whose endpoint is 127.0.0.0/8 port `port`.
fn svc_registry(cred: &Path, port: u16) -> String {
    format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n    endpoints:\n      - cidr: 127.0.0.0/8\n        port: {port}\n",
        cred.display()
    )
}

fn credential(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("dir");
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    (dir, cred)
}

#[test]
fn a_connection_closed_before_the_read_is_not_judged_and_one_still_open_is() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("closed-before");
    let listener = TcpListener::bind("127.0.0.31:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let other = TcpListener::bind("127.0.0.32:0").expect("listen");
    let other_port = other.local_addr().expect("addr").port();
    let d = Daemon::start(&svc_registry(&cred, port));
    // Closed, then kept open, then a datagram socket connected elsewhere; then the read, and a
    // second read of the same file (nothing is judged twice).
    let code = format!(
        "import socket\n\
         closed = socket.create_connection(('127.0.0.31', {port})); closed.close()\n\
         kept = socket.create_connection(('127.0.0.32', {other_port}))\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('127.0.0.33', 5353))\n\
         open('{cred}').read()\n\
         open('{cred}').read()\n\
         kept.close(); u.close()\n",
        cred = cred.display()
    );
    let pid = run(Command::new(PYTHON).args(["-c", &code]));
    d.wait_for(WAIT, |e| e["kind"] == "exit" && e["pid"] == pid);
    let conns = connects_of(&d, pid);
    let tcp: Vec<&Value> = conns.iter().filter(|e| e["proto"] == "tcp").collect();
    assert_eq!(tcp.len(), 1, "{conns:#?}");
    assert_eq!(tcp[0]["daddr"], "127.0.0.32");
    assert_eq!(tcp[0]["dport"], other_port);
    assert_eq!(tcp[0]["established_before_use"], true);
    assert_eq!(tcp[0]["verdict"], "drift");
    assert_eq!(tcp[0]["drift"], json!(["endpoint_out_of_scope"]));
    let udp: Vec<&Value> = conns.iter().filter(|e| e["proto"] == "udp").collect();
    assert_eq!(udp.len(), 1, "{conns:#?}");
    assert_eq!(udp[0]["daddr"], "127.0.0.33");
    assert_eq!(udp[0]["dport"], 5353);
    assert_eq!(udp[0]["established_before_use"], true);
}

#[test]
fn an_inherited_connection_is_judged_when_the_child_reads_and_a_new_one_is_not_marked() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("inherited");
    let listener = TcpListener::bind("127.0.0.34:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let d = Daemon::start(&svc_registry(&cred, port));
    // The parent connects and hands the socket to a child that reads the credential, then
    // connects again itself.
    let child_code = format!(
        "import socket\n\
         open('{cred}').read()\n\
         socket.create_connection(('127.0.0.34', {port})).close()\n",
        cred = cred.display()
    );
    let code = format!(
        "import socket, subprocess\n\
         s = socket.create_connection(('127.0.0.34', {port}))\n\
         subprocess.run(['{PYTHON}', '-c', {child_code:?}], pass_fds=[s.fileno()], check=True)\n\
         s.close()\n"
    );
    let parent = run(Command::new(PYTHON).args(["-c", &code]));
    let read = d.wait_for(WAIT, |e| e["kind"] == "open" && e["ppid"] == parent);
    let child = read["pid"].as_u64().expect("pid") as u32;
    d.wait_for(WAIT, |e| e["kind"] == "exit" && e["pid"] == child);
    let conns = connects_of(&d, child);
    // The inherited socket, at the read; the child's own connection, as it is made. Both go
    // to the declared endpoint, so the one made while holding is the only one to that
    // destination the list needs.
    assert_eq!(conns.len(), 2, "{conns:#?}");
    assert_eq!(conns[0]["established_before_use"], true, "{conns:#?}");
    assert_eq!(conns[0]["verdict"], "ok");
    assert!(
        conns[1].get("established_before_use").is_none(),
        "{conns:#?}"
    );
    assert_eq!(conns[1]["verdict"], "ok");
    // The parent read nothing: none of its connections is judged.
    assert_eq!(connects_of(&d, parent), Vec::<Value>::new());
}

#[test]
fn connections_beyond_what_one_read_sends_are_counted_as_lost() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("cut");
    // Every loopback address reaches it: 40 connections to 40 destinations.
    let listener = TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let d = Daemon::start(&svc_registry(&cred, port));
    // 40 connections open at the read: 32 are sent, the rest counted. Then a process whose
    // file table is larger than the kernel walks (a connection moved to fd 1500): the part
    // above is counted, the connection below is sent.
    let many = format!(
        "import socket\n\
         conns = [socket.create_connection(('127.0.1.%d' % i, {port})) for i in range(1, 41)]\n\
         open('{cred}').read()\n",
        cred = cred.display()
    );
    let first = run(Command::new(PYTHON).args(["-c", &many]));
    d.wait_for(WAIT, |e| e["kind"] == "exit" && e["pid"] == first);
    let sent = connects_of(&d, first);
    assert_eq!(sent.len(), 32, "{sent:#?}");
    assert!(sent.iter().all(|e| e["established_before_use"] == true));
    let lost = d.wait_for(WAIT, |e| {
        e["kind"] == "loss" && e["cause"] == "existing_connections_cut"
    });
    assert_eq!(lost["count"], 1, "{lost}");

    let high = format!(
        "import os, resource, socket\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n\
         low = socket.create_connection(('127.0.0.35', {port}))\n\
         s = socket.create_connection(('127.0.0.35', {port}))\n\
         os.dup2(s.fileno(), 1500); s.close()\n\
         open('{cred}').read()\n",
        cred = cred.display()
    );
    let second = run(Command::new(PYTHON).args(["-c", &high]));
    d.wait_for(WAIT, |e| e["kind"] == "exit" && e["pid"] == second);
    assert_eq!(connects_of(&d, second).len(), 1);
    d.wait_for(WAIT, |e| {
        e["kind"] == "loss"
            && e["cause"] == "existing_connections_cut"
            && e["count"] == 1
            && e != &lost
    });
}
