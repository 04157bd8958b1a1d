//! Which API a holder talks to, as root: real curl and Python clients against local TLS and
//! HTTP servers (Python's `http.server`, with a self-made certificate for TLS), the daemon
//! reading the first bytes of the holders' connections in the kernel. Each test asserts the
//! `request` event's fields and verdict, or that no byte of a request but the fields it names
//! reaches any output.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nhiscope_tests::{
    procs::{run, PYTHON},
    require_root_bpf, temp_dir,
    tls::Pki,
    Daemon,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A directory with one credential file, `<dir>/token`.
fn credential(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    (dir, cred)
}

fn registry(cred: &Path, endpoints: &str) -> String {
    format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n    endpoints:\n{endpoints}",
        cred.display()
    )
}

/// An HTTP server (HTTPS with `tls`: the certificate and key) on `addr`, answering every GET
/// and POST with `ok`; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(addr: &str, tls: Option<&Pki>) -> Server {
        let wrap = match tls {
            Some(p) => format!(
                "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                 ctx.set_alpn_protocols(['http/1.1'])\n\
                 ctx.load_cert_chain('{}', '{}')\n\
                 srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n",
                p.server_cert.display(),
                p.server_key.display()
            ),
            None => String::new(),
        };
        let code = format!(
            r#"import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n: self.rfile.read(n)
        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()
        self.wfile.write(b'ok')
    do_POST = do_GET
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('{addr}', 0), H)
{wrap}print(srv.server_address[1], flush=True)
srv.serve_forever()
"#
        );
        let mut child = Command::new(PYTHON)
            .args(["-c", &code])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line.trim().parse().expect("a port number");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh -c 'TOKEN=$(cat CRED); exec curl ARGS'`: the shell gets the secret from its command
/// substitution and becomes curl (same pid), which makes one call. Returns that pid.
fn holder_curl(cred: &Path, args: &str) -> u32 {
    run(Command::new("sh").args([
        "-c",
        &format!(
            "TOKEN=$(cat '{}'); exec curl -s -o /dev/null --max-time 5 {args}",
            cred.display()
        ),
    ]))
}

fn request_of(e: &Value, pid: u32) -> bool {
    e["kind"] == "request" && e["pid"] == pid
}

/// The numbers (ports, pids) a test script wrote to `path` as its last step, in order.
fn written(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .expect("the script ran to its end")
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

/// The `request` event of `pid`'s call from port `sport`, which asked for `api.wire.test`.
fn api_call(d: &Daemon, pid: u32, sport: u64) -> Value {
    let r = d.wait_for(WAIT, |e| request_of(e, pid) && e["sport"] == sport);
    assert_eq!(r["sni"], "api.wire.test", "{r}");
    r
}

/// `r`, a request, was known by no DNS name, so its server name is a `name_mismatch`.
fn assert_unnamed(r: &Value) {
    assert_eq!(r["dns_names"], json!([]), "a name believed: {r}");
    assert_eq!(r["verdict"], "drift", "{r}");
    let drift = r["drift"].as_array().expect("drift");
    assert!(drift.contains(&json!("name_mismatch")), "{r}");
}

#[test]
fn a_holder_s_https_call_shows_its_server_name_and_alpn_and_an_undeclared_name_is_drift() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-tls");
    let pki = Pki::make("wire-tls");
    let srv = Server::start("127.0.0.1", Some(&pki));
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!(
            "      - cidr: 127.0.0.1/32\n        port: {port}\n        sni: [api.wire.test]\n"
        ),
    ));
    let pid = holder_curl(
        &cred,
        &format!("-k --resolve api.wire.test:{port}:127.0.0.1 https://api.wire.test:{port}/v1/x"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["sni"], "api.wire.test", "{e}");
    let alpn = e["alpn"].as_array().expect("alpn");
    assert!(alpn.contains(&json!("http/1.1")), "{e}");
    assert_eq!(e["tls_version"], "1.3", "{e}");
    assert_eq!(e["daddr"], "127.0.0.1");
    assert_eq!(e["dport"], port);
    assert_eq!(e["nhi"], "svc");
    assert_eq!(e["verdict"], "ok", "{e}");
    assert!(
        e.get("http_path").is_none(),
        "no path is seen inside TLS: {e}"
    );

    // The same address, another server name: the address is allowed, the API is not.
    let pid = holder_curl(
        &cred,
        &format!(
            "-k --resolve billing.wire.test:{port}:127.0.0.1 https://billing.wire.test:{port}/"
        ),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["sni"], "billing.wire.test", "{e}");
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    let reason = e["reason"].as_str().expect("reason");
    assert!(
        reason.contains("billing.wire.test") && reason.contains("NHI svc"),
        "{reason}"
    );
}

#[test]
fn a_plaintext_call_shows_method_host_and_path_and_undeclared_ones_are_drift() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-http");
    let srv = Server::start("127.0.0.1", None);
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!(
            "      - cidr: 127.0.0.1/32\n        port: {port}\n        methods: [GET]\n        paths: ['/v1/*']\n"
        ),
    ));
    let pid = holder_curl(
        &cred,
        &format!("--resolve api.wire.test:{port}:127.0.0.1 'http://api.wire.test:{port}/v1/items?page=2#top'"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_method"], "GET", "{e}");
    assert_eq!(e["http_host"], format!("api.wire.test:{port}"), "{e}");
    assert_eq!(e["http_path"], "/v1/items", "{e}");
    assert!(e.get("sni").is_none(), "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");

    let pid = holder_curl(
        &cred,
        &format!("-X DELETE 'http://127.0.0.1:{port}/v2/items?id=1'"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_method"], "DELETE", "{e}");
    assert_eq!(e["http_path"], "/v2/items", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
}

/// A DNS server on loopback that answers `dnsmasq.wire.test` with 127.0.0.26 (a name and an
/// address of its own: every daemon running meanwhile believes a loopback server's answers).
struct Dnsmasq {
    _running: Killed,
}

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
                "--address=/dnsmasq.wire.test/127.0.0.26",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (installed by `cargo xtask setup`)");
        Self {
            _running: Killed(child),
        }
    }
}

#[test]
fn a_server_name_dns_never_gave_for_the_address_is_a_name_mismatch() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-dns");
    let _dns = Dnsmasq::start("127.0.0.154");
    let srv = Server::start("127.0.0.26", Some(&Pki::make("wire-dns")));
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!("      - host: \"*.test\"\n        port: {port}\n"),
    ));
    // Python reads the credential, asks the DNS server for dnsmasq.wire.test (until it answers:
    // dnsmasq may still be starting), then makes two TLS calls to the address it got: one
    // asking for that name, one for another (a fronted name).
    let script = dir.join("client.py");
    std::fs::write(
        &script,
        format!(
            r#"{OWN_DNS}import time
open('{cred}').read()
q = query('dnsmasq.wire.test', 0x4243)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(0.5)
for _ in range(40):
    u.sendto(q, ('127.0.0.154', 53))
    try:
        r = u.recv(512)
        break
    except socket.timeout:
        pass
ip = socket.inet_ntoa(r[-4:])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for name in ['dnsmasq.wire.test', 'front.other.test']:
    s = ctx.wrap_socket(socket.create_connection((ip, {port})), server_hostname=name)
    s.sendall(b'GET / HTTP/1.0\r\n\r\n'); s.recv(100); s.close()
"#,
            cred = cred.display()
        ),
    )
    .expect("client script");
    let pid = run(Command::new(PYTHON).arg(&script));
    let ok = d.wait_for(WAIT, |e| {
        request_of(e, pid) && e["sni"] == "dnsmasq.wire.test"
    });
    assert_eq!(ok["daddr"], "127.0.0.26", "{ok}");
    assert_eq!(ok["dns_names"], json!(["dnsmasq.wire.test"]), "{ok}");
    assert_eq!(ok["verdict"], "ok", "{ok}");
    let e = d.wait_for(WAIT, |e| {
        request_of(e, pid) && e["sni"] == "front.other.test"
    });
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["drift"], json!(["name_mismatch"]), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("front.other.test")),
        "{e}"
    );
}

/// A holder that leaves the host's network namespace for one of its own (`unshare`, as any
/// user may with a user namespace, or as root), runs a DNS server there and answers its own
/// query (`api.wire.test` is 127.0.0.25), then calls 127.0.0.25 on a socket it made before it
/// left, in the host's namespace, naming `api.wire.test`. The answer names nothing outside its
/// namespace: the host-side call has no DNS names, is out of a `host:` endpoint, and its server
/// name is a `name_mismatch`. Inside a namespace root made, its own connection is known by that
/// answer (names are kept per namespace, not dropped); inside one a user namespace owns, not
/// even there.
#[test]
fn a_dns_answer_a_process_gives_itself_in_a_namespace_of_its_own_names_nothing_outside_it() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-netns");
    let srv = Server::start("127.0.0.25", Some(&Pki::make("wire-netns")));
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!("      - host: \"*.test\"\n        port: {port}\n"),
    ));
    // What DNS names rest on is said at start (and in the health view).
    assert!(
        d.output().iter().any(|l| l.contains(&format!(
            "not seen: {}",
            nhiscope::sense::coverage::DNS_NAMES_PER_NAMESPACE
        ))),
        "{:?}",
        d.output()
    );
    for mode in ["root", "user"] {
        let script = dir.join(format!("own-dns-{mode}.py"));
        let ports = dir.join(format!("ports-{mode}.txt"));
        std::fs::write(
            &script,
            format!(
                r#"{OWN_DNS}open('{cred}').read()
libc = ctypes.CDLL(None, use_errno=True)
outside = socket.socket()
flags = 0x40000000 | (0x10000000 if '{mode}' == 'user' else 0)  # CLONE_NEWNET, CLONE_NEWUSER
if libc.unshare(flags) != 0:
    raise OSError(ctypes.get_errno(), 'unshare')
lo_up()
ip = own_dns('127.0.0.1')
# Inside: a listener at that address in this namespace, and a connection to it.
l = socket.socket()
l.bind((ip, {port}))
l.listen()
socket.create_connection((ip, {port}))
# Outside: the socket made in the host's namespace, to the real server there.
outside.connect((ip, {port}))
open('{ports}', 'w').write('%d\n' % tls(outside))
"#,
                cred = cred.display(),
                ports = ports.display(),
            ),
        )
        .expect("script");
        let pid = run(Command::new(PYTHON).arg(&script));
        let r = api_call(&d, pid, written(&ports)[0]);
        assert_unnamed(&r);
        assert!(
            r["reason"].as_str().is_some_and(|s| s
                .contains("no DNS answer believed in its network namespace named that address")),
            "{mode}: {r}"
        );
        // Its two TCP connects, in the order made (a connect has no source port yet): inside
        // its namespace, then outside.
        let connects: Vec<Value> = d
            .events()
            .into_iter()
            .filter(|e| e["kind"] == "connect" && e["pid"] == pid && e["proto"] == "tcp")
            .collect();
        let [inside, outside] = &connects[..] else {
            panic!("{mode}: two connects, not {connects:?}")
        };
        assert_eq!(outside["daddr"], "127.0.0.25", "{mode}: {outside}");
        assert_eq!(outside["dns_names"], json!([]), "{mode}: {outside}");
        assert_eq!(
            outside["drift"],
            json!(["endpoint_out_of_scope"]),
            "{mode}: {outside}"
        );
        let e = inside;
        match mode {
            "root" => {
                assert_eq!(e["dns_names"], json!(["api.wire.test"]), "{mode}: {e}");
                assert_eq!(e["verdict"], "ok", "{mode}: {e}");
            }
            _ => {
                assert_eq!(e["dns_names"], json!([]), "{mode}: {e}");
                assert_eq!(e["drift"], json!(["endpoint_out_of_scope"]), "{mode}: {e}");
            }
        }
    }
}

/// The owner of a query's namespace is checked for the socket's namespace, not the sender's: a
/// holder whose child made a DNS client socket in a namespace a user namespace owns, and passed
/// it back, sends the query on it from the host's namespace; the child's own server answers it
/// there and the child calls that address, naming `api.wire.test`. Not believed: the call has
/// no DNS names and its server name is a `name_mismatch` (were the sender's namespace taken for
/// the socket's, it would be `ok`).
#[test]
fn a_query_sent_from_the_host_s_namespace_on_a_socket_of_a_user_owned_one_is_not_believed() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-netns-passed");
    let d = Daemon::start(&registry(
        &cred,
        "      - host: \"*.test\"\n        port: 8443\n",
    ));
    let script = dir.join("passed.py");
    let ports = dir.join("passed-ports.txt");
    std::fs::write(
        &script,
        format!(
            r#"{OWN_DNS}open('{cred}').read()
a, b = socket.socketpair()
child = os.fork()
if child == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000 | 0x10000000) != 0:  # CLONE_NEWNET, CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), 'unshare')
    lo_up()
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(('127.0.0.1', 53))
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socket.send_fds(b, [b'c'], [c.fileno()])
    asked, peer = dns.recvfrom(512)
    dns.sendto(answer(asked, '127.0.0.1'), peer)
    b.recv(1)
    l = socket.socket()
    l.bind(('127.0.0.1', 8443))
    l.listen()
    s = socket.create_connection(('127.0.0.1', 8443))
    s.sendall(hello('api.wire.test'))
    open('{ports}', 'w').write('%d %d\n' % (os.getpid(), s.getsockname()[1]))
    os._exit(0)
_, fds, _, _ = socket.recv_fds(a, 1, 1)
c = socket.socket(fileno=fds[0])
c.settimeout(5)
c.sendto(query('api.wire.test', 0x4346), ('127.0.0.1', 53))
assert socket.inet_ntoa(c.recv(512)[-4:]) == '127.0.0.1'
a.send(b'g')
_, status = os.waitpid(child, 0)
assert status == 0, status
"#,
            cred = cred.display(),
            ports = ports.display(),
        ),
    )
    .expect("script");
    run(Command::new(PYTHON).arg(&script));
    let [child, sport] = written(&ports)[..] else {
        panic!("a pid and a port")
    };
    let child = child as u32;
    assert_unnamed(&api_call(&d, child, sport));
    let connect = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == child && e["dport"] == 8443
    });
    assert_eq!(connect["dns_names"], json!([]), "{connect}");
    assert_eq!(
        connect["drift"],
        json!(["endpoint_out_of_scope"]),
        "{connect}"
    );
}

/// Python shared by the tests that speak DNS and TLS themselves: `query(name, qid)` a query for
/// `name`'s A record; `answer(q, ip)` the answer to query `q` naming `ip`; `own_dns(addr, name,
/// ip)` a DNS server on `addr`:53 in the caller's namespace that is asked for `name`
/// (`api.wire.test`) and answers itself with `ip` (127.0.0.25; the answer's address); `lo_up()` the loopback device up in a
/// new network namespace; `hello(name)` the ClientHello Python's ssl module makes for a server
/// name; `tls(s)` a TLS call on the connected socket `s` naming `api.wire.test` (its port).
const OWN_DNS: &str = r#"import ctypes, fcntl, os, socket, ssl, struct, threading
def query(name, qid=0x4345):
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    return q + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\x00' + struct.pack('>HH', 1, 1)
def answer(q, ip):
    a = q[:2] + b'\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00' + q[12:]
    return a + b'\xc0\x0c' + struct.pack('>HHIH', 1, 1, 300, 4) + socket.inet_aton(ip)
def own_dns(addr, name='api.wire.test', ip='127.0.0.25'):
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((addr, 53))
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(5)
    c.sendto(query(name), (addr, 53))
    asked, peer = dns.recvfrom(512)
    dns.sendto(answer(asked, ip), peer)
    return socket.inet_ntoa(c.recv(512)[-4:])
def lo_up():
    # SIOCSIFFLAGS, IFF_UP
    fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8914, struct.pack('16sH14x', b'lo', 1))
def hello(name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    t = ctx.wrap_bio(i, o, server_hostname=name)
    try: t.do_handshake()
    except ssl.SSLWantReadError: pass
    return o.read()
def tls(s):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname='api.wire.test')
    t.sendall(b'GET / HTTP/1.0\r\n\r\n')
    t.recv(100)
    return t.getsockname()[1]
"#;

/// An address added to the host's loopback device for one test, removed on drop: a server
/// there is on no loopback address (it stands for a server anywhere).
struct LoAddress(&'static str);

impl LoAddress {
    fn add(addr: &'static str) -> Self {
        let _ = Command::new("ip")
            .args(["addr", "del", addr, "dev", "lo"])
            .output();
        let st = Command::new("ip")
            .args(["addr", "add", addr, "dev", "lo"])
            .status()
            .expect("ip (iproute2)");
        assert!(st.success(), "ip addr add {addr} dev lo");
        Self(addr)
    }
}

impl Drop for LoAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", self.0, "dev", "lo"])
            .output();
    }
}

/// A holder that asks a DNS server of its own choice (here its own, on an address that is not
/// a loopback one and not among the host's resolvers) names nothing: the answer is not believed,
/// its call is out of a `host:` endpoint and a `name_mismatch`. The same server given to the
/// daemon (`--dns-server`) is believed.
#[test]
fn a_dns_server_the_holder_chose_names_nothing_unless_the_daemon_is_told_of_it() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-chosen-dns");
    let srv = Server::start("127.0.0.25", Some(&Pki::make("wire-chosen-dns")));
    let port = srv.port;
    let _addr = LoAddress::add("10.254.181.1/32");
    let reg = registry(
        &cred,
        &format!("      - host: \"*.test\"\n        port: {port}\n"),
    );
    // The daemon told of the server by flag, or by a resolver configuration naming it.
    let conf = dir.join("resolv.conf");
    std::fs::write(&conf, "search wire.test\nnameserver 10.254.181.1\n").expect("resolv.conf");
    for how in ["not told", "--dns-server", "--resolv-conf"] {
        let told = how != "not told";
        let extra: Vec<&std::ffi::OsStr> = match how {
            "--dns-server" => vec![how.as_ref(), "10.254.181.1".as_ref()],
            "--resolv-conf" => vec![how.as_ref(), conf.as_os_str()],
            _ => vec![],
        };
        let d = Daemon::start_with(&reg, &extra);
        let script = dir.join(format!("chosen-{told}-{}.py", how.len()));
        let ports = dir.join(format!("chosen-{told}-{}.txt", how.len()));
        std::fs::write(
            &script,
            format!(
                "{OWN_DNS}open('{cred}').read()\nip = own_dns('10.254.181.1')\n\
                 p = tls(socket.create_connection((ip, {port})))\n\
                 open('{ports}', 'w').write('%d\\n' % p)\n",
                cred = cred.display(),
                ports = ports.display(),
            ),
        )
        .expect("script");
        let pid = run(Command::new(PYTHON).arg(&script));
        let r = api_call(&d, pid, written(&ports)[0]);
        if told {
            assert_eq!(r["dns_names"], json!(["api.wire.test"]), "{how}: {r}");
            assert_eq!(r["verdict"], "ok", "{how}: {r}");
        } else {
            // The server is named in the log, with what to do if it is one of the host's.
            d.wait_output(WAIT, 0, |l| {
                l.contains("DNS: queries to 10.254.181.1, which is not a resolver")
            });
            assert_unnamed(&r);
            let c = d.wait_for(WAIT, |e| {
                e["kind"] == "connect" && e["pid"] == pid && e["proto"] == "tcp"
            });
            assert_eq!(c["drift"], json!(["endpoint_out_of_scope"]), "{c}");
        }
    }
}

/// A socket made in a namespace where its maker answers its own DNS queries (root made it: the
/// answer is believed there), then used by a process of the host's namespace (the maker itself,
/// back in the host's namespace by `setns`, as a process handed the socket would be): its
/// connection carries no namespace names, so the forged name does not pass for the host's.
#[test]
fn a_socket_made_in_a_namespace_with_its_own_dns_brings_no_names_to_a_process_outside() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-passed-socket");
    let d = Daemon::start(&registry(&cred, "      - host: \"*.test\"\n"));
    let script = dir.join("passed.py");
    let ports = dir.join("passed.txt");
    std::fs::write(
        &script,
        format!(
            r#"{OWN_DNS}open('{cred}').read()
libc = ctypes.CDLL(None, use_errno=True)
host = os.open('/proc/self/ns/net', os.O_RDONLY)
# In the host's namespace: a loopback server (believed there) names 127.0.0.27, where a
# listener waits; a socket made there is kept.
hostside = own_dns('127.0.0.27', 'hostside.wire.test', '127.0.0.27')
hl = socket.socket()
hl.bind((hostside, 0))
hl.listen()
kept = socket.socket()
if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
    raise OSError(ctypes.get_errno(), 'unshare')
lo_up()
inner = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
ip = own_dns('127.0.0.1')
l = socket.socket()
l.bind((ip, 0))
l.listen()
inside = socket.create_connection((ip, l.getsockname()[1]))
made_here = socket.socket()
if libc.setns(host, 0x40000000) != 0:
    raise OSError(ctypes.get_errno(), 'setns')
made_here.connect((ip, l.getsockname()[1]))
made_here.sendall(hello('api.wire.test'))
# And the other way: the host's socket, used from the namespace made before (by a thread that
# enters it: the kernel's check is of the task).
def use_kept():
    if libc.setns(inner, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), 'setns')
    kept.connect((hostside, hl.getsockname()[1]))
th = threading.Thread(target=use_kept)
th.start()
th.join()
open('{ports}', 'w').write('%d %d\n' % (inside.getsockname()[1], made_here.getsockname()[1]))
"#,
            cred = cred.display(),
            ports = ports.display(),
        ),
    )
    .expect("script");
    let pid = run(Command::new(PYTHON).arg(&script));
    // The first bytes sent on it are judged with no names either (its mark says so).
    let r = api_call(&d, pid, written(&ports)[1]);
    assert_eq!(r["sni"], "api.wire.test", "{r}");
    assert_unnamed(&r);
    // Its three TCP connects in the order made: inside the namespace (its own names), on the
    // socket made there by the process back in the host's namespace (none), and on the host's
    // socket from inside the namespace (the host's).
    let _ = d.wait_for(WAIT, |e| e["kind"] == "exit" && e["pid"] == pid);
    let connects: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "connect" && e["pid"] == pid && e["proto"] == "tcp")
        .collect();
    let [inside, passed, kept] = &connects[..] else {
        panic!("three connects, not {connects:?}")
    };
    // A socket of the host's namespace keeps the host's names, whoever uses it.
    assert_eq!(kept["daddr"], "127.0.0.27", "{kept}");
    assert_eq!(kept["dns_names"], json!(["hostside.wire.test"]), "{kept}");
    assert_eq!(inside["dns_names"], json!(["api.wire.test"]), "{inside}");
    assert_eq!(inside["verdict"], "ok", "{inside}");
    assert_eq!(passed["daddr"], "127.0.0.25", "{passed}");
    assert_eq!(passed["dns_names"], json!([]), "{passed}");
    assert_eq!(
        passed["drift"],
        json!(["endpoint_out_of_scope"]),
        "{passed}"
    );
}

/// A network namespace with a veth pair to the host's (host side 10.254.182.2, its side
/// 10.254.182.1): a resolver reached over an interface of its own. Named after this test
/// process, removed on drop (also when it was not made whole).
struct ResolverNet {
    ns: String,
    veth: String,
}

impl ResolverNet {
    fn make() -> Self {
        let id = std::process::id() % 10_000_000;
        let net = Self {
            ns: format!("nhiscope-res{id}"),
            veth: format!("nhr{id}a"),
        };
        net.remove();
        let sh = format!(
            "ip netns add {ns} && ip link add {veth} type veth peer name nhr{id}b netns {ns} && \
             ip addr add 10.254.182.2/24 dev {veth} && ip link set {veth} up && \
             ip -n {ns} addr add 10.254.182.1/24 dev nhr{id}b && \
             ip -n {ns} link set nhr{id}b up && ip -n {ns} link set lo up",
            ns = net.ns,
            veth = net.veth,
        );
        let st = Command::new("sh").args(["-c", &sh]).status().expect("sh");
        assert!(st.success(), "{sh}");
        net
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

impl Drop for ResolverNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host's resolver is reached over an interface; a holder asks it, and an accomplice that
/// can send packets with the resolver's address (here a raw socket on the host, as a container's
/// root or a host on an unfiltered network could) answers in its place with the holder's id and
/// port: the answer comes in by another interface than the query left by, and names nothing.
/// The resolver's own answer, by that interface, is believed.
#[test]
fn a_forged_answer_with_the_resolver_s_address_by_another_interface_names_nothing() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-spoofed-dns");
    let srv = Server::start("127.0.0.25", Some(&Pki::make("wire-spoofed-dns")));
    let port = srv.port;
    let net = ResolverNet::make();
    // The resolver: answers api.wire.test with 127.0.0.25, once.
    let resolver = dir.join("resolver.py");
    std::fs::write(
        &resolver,
        format!(
            "{OWN_DNS}d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             d.bind(('10.254.182.1', 53))\n\
             print('up', flush=True)\n\
             q, peer = d.recvfrom(512)\n\
             d.sendto(answer(q, '127.0.0.25'), peer)\n"
        ),
    )
    .expect("resolver");
    let d = Daemon::start_with(
        &registry(
            &cred,
            &format!("      - host: \"*.test\"\n        port: {port}\n"),
        ),
        &["--dns-server".as_ref(), "10.254.182.1".as_ref()],
    );
    // What a resolver over the network leaves open is said (and in the health view).
    assert!(
        d.output().iter().any(|l| l.contains(
            "not seen: DNS answers from resolvers reached \
             over the network"
        ) && l.contains("10.254.182.1")),
        "{:?}",
        d.output()
    );
    // The forged answer first: the resolver's own, believed, would name the address for it.
    for forged in [true, false] {
        let mut real = None;
        if !forged {
            let mut r = Killed(
                Command::new("ip")
                    .args(["netns", "exec", &net.ns, PYTHON])
                    .arg(&resolver)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("resolver"),
            );
            let mut line = String::new();
            BufReader::new(r.0.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the resolver is up");
            real = Some(r);
        }
        let script = dir.join(format!("asker-{forged}.py"));
        let ports = dir.join(format!("asker-{forged}.txt"));
        std::fs::write(
            &script,
            format!(
                r#"{OWN_DNS}open('{cred}').read()
# Not connected: the port unreachable that the resolver's namespace sends back when nothing
# listens (the forged case) is not reported to an unconnected socket.
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = query('api.wire.test', 0x4346)
c.sendto(q, ('10.254.182.1', 53))
if {forged}:
    # The accomplice: the resolver's address, the holder's port and id, by a raw socket.
    ans = answer(q, '127.0.0.25')
    me, myport = '10.254.182.2', c.getsockname()[1]
    udp = struct.pack('>HHHH', 53, myport, 8 + len(ans), 0) + ans
    ip4 = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      socket.inet_aton('10.254.182.1'), socket.inet_aton(me))
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).sendto(ip4 + udp, (me, 0))
c.settimeout(10)
ip = socket.inet_ntoa(c.recv(512)[-4:])
p = tls(socket.create_connection((ip, {port})))
open('{ports}', 'w').write('%d\n' % p)
"#,
                forged = if forged { "True" } else { "False" },
                cred = cred.display(),
                ports = ports.display(),
            ),
        )
        .expect("script");
        let pid = run(Command::new(PYTHON).arg(&script));
        drop(real);
        // Written once it got an answer and called.
        let r = api_call(&d, pid, written(&ports)[0]);
        if forged {
            assert_unnamed(&r);
        } else {
            assert_eq!(r["dns_names"], json!(["api.wire.test"]), "{r}");
            assert_eq!(r["verdict"], "ok", "{r}");
        }
    }
}

#[test]
fn no_byte_of_a_header_value_body_or_query_reaches_any_output_and_non_holders_send_no_request() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-canary");
    let plain = Server::start("127.0.0.1", None);
    let pki = Pki::make("wire-canary");
    let tls = Server::start("127.0.0.1", Some(&pki));
    let d = Daemon::start_with(
        &registry(&cred, "      - cidr: 127.0.0.1/32\n"),
        &["--log-level".as_ref(), "debug".as_ref()],
    );
    let live = UnixStream::connect(d.live_socket()).expect("the live socket");
    live.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut live = BufReader::new(live);

    // A process that holds nothing: its connection is not read.
    let other = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/not-a-holder", plain.port),
    ]));

    // The canary is in curl's config file, not its command line (which events carry).
    const CANARY: &str = "wirecanary7f3a9c";
    let config = dir.join("curl.conf");
    std::fs::write(
        &config,
        format!(
            "url = \"http://127.0.0.1:{p}/upload?key={CANARY}\"\n\
             header = \"X-Api-Key: {CANARY}\"\n\
             data = \"secret={CANARY}\"\n\
             next\n\
             url = \"https://127.0.0.1:{t}/v1/x?key={CANARY}\"\n\
             insecure\n\
             output = \"/dev/null\"\n\
             header = \"Authorization: Bearer {CANARY}\"\n\
             data = \"secret={CANARY}\"\n",
            p = plain.port,
            t = tls.port,
        ),
    )
    .expect("curl config");
    let pid = holder_curl(&cred, &format!("-K '{}'", config.display()));
    let http = d.wait_for(WAIT, |e| request_of(e, pid) && e["dport"] == plain.port);
    assert_eq!(http["http_method"], "POST", "{http}");
    assert_eq!(http["http_path"], "/upload", "{http}");
    let tls_req = d.wait_for(WAIT, |e| request_of(e, pid) && e["dport"] == tls.port);
    assert_eq!(tls_req["tls_version"], "1.3", "{tls_req}");

    // The live feed has seen both requests (in order, after the non-holder's call).
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut seen = 0;
    while seen < 2 {
        assert!(
            started.elapsed() < WAIT,
            "the live feed did not show both requests"
        );
        let mut line = String::new();
        match live.read_line(&mut line) {
            Ok(0) => panic!("the live feed closed"),
            Ok(_) if line.ends_with('\n') => {}
            _ => continue,
        }
        if line.contains("\"request\"") && line.contains(&format!("\"pid\":{pid}")) {
            seen += 1;
        }
        lines.push(line);
    }
    let events = std::fs::read_to_string(d.events_path()).expect("the events file");
    let stderr = d.output().join("\n");
    for (what, text) in [
        ("the events file", events.as_str()),
        ("the daemon's output", stderr.as_str()),
        ("the live feed", &lines.concat()),
    ] {
        assert!(!text.contains(CANARY), "{what} has the canary:\n{text}");
    }
    assert!(
        !d.events().iter().any(|e| request_of(e, other)),
        "a process that holds nothing sent a request event"
    );
}

#[test]
fn with_wire_all_connections_a_non_holder_s_request_is_read_without_an_nhi() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-all");
    let srv = Server::start("127.0.0.1", None);
    let d = Daemon::start_with(
        &registry(&cred, "      - cidr: 127.0.0.1/32\n"),
        &["--wire-all-connections".as_ref()],
    );
    let pid = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/status?x=1", srv.port),
    ]));
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_path"], "/status", "{e}");
    assert_eq!(e["nhi"], Value::Null, "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
}

/// Python code for a holder that reads `cred`, then plays the connections of `body` against
/// its own sink servers (on 127.0.0.1 and ::1, reading whatever comes): `call(label, pieces,
/// v6=False, opts=())` connects with Nagle off, sets the IPv6 socket options `opts`, sends each
/// piece as its own packet (a pause between; a `(bytes, flags)` piece with those `send` flags),
/// and writes `label sport` to `ports`;
/// and the helpers of [`OWN_DNS`] (`hello(name)`: the ClientHello Python's ssl module makes for
/// a server name).
fn attacker_script(cred: &Path, ports: &Path, body: &str) -> String {
    format!(
        r#"{OWN_DNS}import threading, time
open('{cred}').read()
def sink(family, addr):
    l = socket.socket(family)
    l.bind((addr, 0)); l.listen(16)
    def serve():
        while True:
            c, _ = l.accept()
            c.settimeout(2)
            try:
                while c.recv(4096): pass
            except OSError: pass
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    return l.getsockname()[1]
P4 = sink(socket.AF_INET, '127.0.0.1')
P6 = sink(socket.AF_INET6, '::1')
out = open('{ports}', 'w')
def call(label, pieces, v6=False, opts=()):
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
    for o in opts: s.setsockopt(socket.IPPROTO_IPV6, o, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(('::1', P6) if v6 else ('127.0.0.1', P4))
    for i, p in enumerate(pieces):
        if i: time.sleep(0.15)
        if isinstance(p, tuple): s.send(p[0], p[1])
        else: s.sendall(p)
    out.write('%s %d\n' % (label, s.getsockname()[1])); out.flush()
    time.sleep(0.1)
    s.close()
{body}
"#,
        cred = cred.display(),
        ports = ports.display()
    )
}

/// Runs [`attacker_script`] as a holder; its pid and the source port of each labelled call.
fn attack(dir: &Path, cred: &Path, body: &str) -> (u32, HashMap<String, u64>) {
    let script = dir.join("attacker.py");
    let ports = dir.join("ports.txt");
    std::fs::write(&script, attacker_script(cred, &ports, body)).expect("script");
    let pid = run(Command::new(PYTHON).arg(&script));
    let ports = std::fs::read_to_string(&ports)
        .expect("ports")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(label, port)| (label.to_owned(), port.parse().expect("a port")))
        .collect();
    (pid, ports)
}

/// The `request` event of the call `label` of [`attack`].
fn labelled(d: &Daemon, pid: u32, ports: &HashMap<String, u64>, label: &str) -> Value {
    let sport = ports[label];
    d.wait_for(WAIT, |e| request_of(e, pid) && e["sport"] == sport)
}

/// A sender that splits its first bytes (a bare record header first, or a byte at a time)
/// or pads its ClientHello past what is copied cannot hide the server name it asks for: the
/// pieces are joined, and a ClientHello that cannot be read whole is out of an endpoint that
/// declares its server names.
#[test]
fn a_client_hello_split_into_pieces_or_padded_past_the_capture_does_not_hide_its_name() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-split");
    let d = Daemon::start(&registry(
        &cred,
        "      - cidr: 127.0.0.1/32\n        sni: [api.wire.test]\n",
    ));
    let (pid, ports) = attack(
        &dir,
        &cred,
        r#"h = hello('evil.wire.test')
call('decoy', [h[:5], h[5:]])
call('bytes', [h[i:i + 1] for i in range(7)] + [h[7:]])
ok = hello('api.wire.test')
call('ok', [ok[:3], ok[3:]])
# A ClientHello padded so that its server name lies past the 2 KiB copied.
name = b'evil.wire.test'
sni = b'\x00\x00' + (len(name) + 5).to_bytes(2, 'big') + (len(name) + 3).to_bytes(2, 'big') + b'\x00' + len(name).to_bytes(2, 'big') + name
pad = b'\x00\x15' + (3000).to_bytes(2, 'big') + bytes(3000)
exts = pad + sni
body = b'\x03\x03' + bytes(32) + b'\x00' + b'\x00\x02\x13\x01' + b'\x01\x00' + len(exts).to_bytes(2, 'big') + exts
hs = b'\x01' + len(body).to_bytes(3, 'big') + body
call('padded', [b'\x16\x03\x01' + len(hs).to_bytes(2, 'big') + hs])
"#,
    );
    let by = |label: &str| labelled(&d, pid, &ports, label);
    for label in ["decoy", "bytes"] {
        let e = by(label);
        assert_eq!(e["sni"], "evil.wire.test", "{label}: {e}");
        assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{label}: {e}");
    }
    let e = by("ok");
    assert_eq!(
        (&e["sni"], &e["verdict"]),
        (&json!("api.wire.test"), &json!("ok")),
        "{e}"
    );
    let e = by("padded");
    assert!(e.get("sni").is_none(), "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    let reason = e["reason"].as_str().expect("reason");
    assert!(reason.contains("could not be read"), "{reason}");
}

/// Spellings a server reads as another request do not pass for a declared one: a path with
/// `..` (plain or escaped), an absolute-form target naming another server, two `Host` lines,
/// a request line sent a byte first; bare LF line ends are read as servers read them; a token
/// in a path is masked in every output.
#[test]
fn http_spellings_do_not_pass_for_a_declared_api_and_a_token_in_a_path_is_masked() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-spell");
    let d = Daemon::start_with(
        &registry(
            &cred,
            "      - cidr: 127.0.0.1/32\n        sni: [api.wire.test]\n        methods: [GET]\n        paths: ['/v1/**']\n",
        ),
        &["--log-level".as_ref(), "debug".as_ref()],
    );
    const TOKEN: &str = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    let (pid, ports) = attack(
        &dir,
        &cred,
        &format!(
            r#"H = b'Host: api.wire.test\r\n'
call('ok', [b'GET /v1/items HTTP/1.1\r\n' + H + b'\r\n'])
call('lf', [b'GET /v1/items HTTP/1.1\n' + H.replace(b'\r', b'') + b'\n'])
call('dots', [b'GET /v1/../admin HTTP/1.1\r\n' + H + b'\r\n'])
call('escaped', [b'GET /v1/%2e%2E/admin HTTP/1.1\r\n' + H + b'\r\n'])
call('absolute', [b'GET http://evil.wire.test/v1/items HTTP/1.1\r\n' + H + b'\r\n'])
call('two-hosts', [b'GET /v1/items HTTP/1.1\r\n' + H + b'Host: evil.wire.test\r\n\r\n'])
call('decoy', [b'G', b'ET /admin HTTP/1.1\r\n' + H + b'\r\n'])
call('token', [b'GET /v1/bot123456789:{TOKEN}/send HTTP/1.1\r\n' + H + b'\r\n'])
call('urgent', [b'GET ', (b'/', socket.MSG_OOB), b'http://evil.wire.test/v1/items HTTP/1.1\r\n' + H + b'\r\n'])
"#
        ),
    );
    let by = |label: &str| labelled(&d, pid, &ports, label);
    for label in ["ok", "lf"] {
        let e = by(label);
        assert_eq!(e["verdict"], "ok", "{label}: {e}");
        assert_eq!(e["http_path"], "/v1/items", "{label}: {e}");
    }
    for (label, path) in [
        ("dots", "/admin"),
        ("escaped", "/admin"),
        ("decoy", "/admin"),
    ] {
        let e = by(label);
        assert_eq!(e["http_path"], path, "{label}: {e}");
        assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{label}: {e}");
    }
    let e = by("absolute");
    assert_eq!(e["http_host"], "evil.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    let e = by("two-hosts");
    assert!(e.get("http_host").is_none(), "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    // Urgent data is taken out of what the server reads: the bytes cannot be read.
    let e = by("urgent");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not be read")),
        "{e}"
    );
    let e = by("token");
    assert_eq!(e["http_path"], "/v1/***/send", "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
    let events = std::fs::read_to_string(d.events_path()).expect("the events file");
    let output = d.output().join("\n");
    assert!(!events.contains(TOKEN), "the events file has the token");
    assert!(!output.contains(TOKEN), "the daemon's output has the token");
}

/// IPv6 extension headers (hop-by-hop and destination options, which a process may set on
/// its socket) do not hide a connection's first bytes: the kernel walks them to the TCP
/// segment.
#[test]
fn ipv6_extension_headers_do_not_hide_the_first_bytes() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-v6");
    let d = Daemon::start(&registry(
        &cred,
        "      - cidr: ::1/128\n        sni: [api.wire.test]\n",
    ));
    let (pid, ports) = attack(
        &dir,
        &cred,
        r#"call('plain', [hello('api.wire.test')], v6=True)
call('ext', [hello('evil.wire.test')], v6=True, opts=(socket.IPV6_HOPOPTS, socket.IPV6_DSTOPTS))
"#,
    );
    let by = |label: &str| labelled(&d, pid, &ports, label);
    let e = by("plain");
    assert_eq!(
        (&e["sni"], &e["verdict"]),
        (&json!("api.wire.test"), &json!("ok")),
        "{e}"
    );
    let e = by("ext");
    assert_eq!(e["daddr"], "::1", "{e}");
    assert_eq!(e["sni"], "evil.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
}

/// A holder that fills the kernel's holder set with children cannot hide another holder's
/// connections: while the set is full every connection is marked (and the daemon says so);
/// once the children are gone, the set has room again and only holders' are, those it refused
/// among them (a reader, and a child it forked while the set was full).
#[test]
fn a_full_holder_set_reads_every_connection_until_it_has_room_again() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-full");
    let d = Daemon::start_with(
        &registry(
            &cred,
            "      - cidr: 127.0.0.1/32\n        sni: [api.wire.test]\n",
        ),
        &["--holder-set-max".as_ref(), "64".as_ref()],
    );
    // A shell that reads the credential on a descriptor of its own (it holds the NHI), then
    // forks 80 sleeping children: each joins the set at fork, and 64 fill it.
    let mut filler = Command::new("sh");
    filler.args([
        "-c",
        &format!(
            "exec 3<'{}'; for i in $(seq 80); do sleep 60 & done; echo filled; wait",
            cred.display()
        ),
    ]);
    filler.stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut filler, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut filler = filler.spawn().expect("sh");
    let mut line = String::new();
    BufReader::new(filler.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the filler's children are started");
    d.wait_output(WAIT, 0, |l| l.contains("the kernel's holder set is full"));

    // Another holder, which found no room in the set: its call is read all the same.
    let (pid, ports) = attack(&dir, &cred, "call('full', [hello('evil.wire.test')])\n");
    let e = labelled(&d, pid, &ports, "full");
    assert_eq!(e["nhi"], "svc", "{e}");
    assert_eq!(e["sni"], "evil.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");

    // A holder the full set refused (the kernel's add at its read and the daemon's), alive
    // across the drain: it waits for a line before its call. And its child, forked while the
    // set is full (the kernel's add at fork refused too), which calls only after the drain.
    let script = dir.join("late.py");
    let ports = dir.join("late-ports.txt");
    std::fs::write(
        &script,
        attacker_script(
            &cred,
            &ports,
            r#"import os, sys
child = os.fork()
if child == 0:
    sys.stdin.readline()
    out.write('childpid %d\n' % os.getpid()); out.flush()
    call('child', [hello('child.wire.test')])
    os._exit(0)
print('holding', flush=True)
sys.stdin.readline()
call('after', [hello('late.wire.test')])
os.waitpid(child, 0)
"#,
        ),
    )
    .expect("script");
    let mut late = Command::new(PYTHON)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let late_pid = late.id();
    let mut line = String::new();
    BufReader::new(late.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the late holder read its credential");
    // The daemon has decided it holds the NHI while the set was full.
    d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == late_pid);

    // The children gone, the set has room again.
    // SAFETY: a plain kill(2) of the filler's process group (setsid above made it its own).
    unsafe {
        libc::kill(-(filler.id() as i32), libc::SIGKILL);
    }
    let _ = filler.wait();
    d.wait_output(WAIT, 0, |l| l.contains("holder set has room again"));

    // Now only holders' connections are read: the refused holder's is, as it was put in.
    std::io::Write::write_all(&mut late.stdin.take().expect("stdin"), b"go\n").expect("go");
    assert!(
        late.wait().expect("wait").success(),
        "the late holder's call"
    );
    let written: HashMap<String, u64> = std::fs::read_to_string(&ports)
        .expect("ports")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(label, n)| (label.to_owned(), n.parse().expect("a number")))
        .collect();
    let e = d.wait_for(WAIT, |e| {
        request_of(e, late_pid) && e["sport"] == written["after"]
    });
    assert_eq!(e["sni"], "late.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    // The child the full set refused at its fork was put in with its parent.
    let child = written["childpid"] as u32;
    let e = d.wait_for(WAIT, |e| {
        request_of(e, child) && e["sport"] == written["child"]
    });
    assert_eq!(e["sni"], "child.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
}

/// A request sent in the SYN (TCP Fast Open, without a cookie) then finished in a later packet,
/// and a socket disconnected (`connect(AF_UNSPEC)`) after a first byte and connected again:
/// each is read as the server reads it. The SYN's data starts one past its sequence number (a
/// misplaced SYN read a byte twice where the server, not taking data in a SYN here, has it sent
/// again after the handshake); the socket connected again starts its first bytes again (a kept
/// mark read them as the old connection's).
#[test]
fn a_fast_open_request_and_a_socket_connected_again_are_read_as_sent() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-tfo");
    let d = Daemon::start(&registry(
        &cred,
        "      - cidr: 127.0.0.1/32\n        sni: [api.wire.test]\n",
    ));
    let (pid, ports) = attack(
        &dir,
        &cred,
        r#"import ctypes, struct
def syn_data():
    # The kernel's count of SYNs sent with data (acknowledged or not): this test's own.
    lines = [l.split() for l in open('/proc/net/netstat') if l.startswith('TcpExt:')]
    row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return row['TCPFastOpenActive'] + row['TCPFastOpenActiveFail']
before = syn_data()
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, 34, 1)  # TCP_FASTOPEN_NO_COOKIE
s.sendto(b'GET /v1/ch', 0x20000000, ('127.0.0.1', P4))  # MSG_FASTOPEN: in the SYN
time.sleep(0.15)
s.sendall(b'arges HTTP/1.1\r\nHost: api.wire.test\r\n\r\n')
if syn_data() == before:
    raise SystemExit('the SYN carried no data')
out.write('tfo %d\n' % s.getsockname()[1]); out.flush()
time.sleep(0.1)
s.close()
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.connect(('127.0.0.1', P4))
s.send(b'\x16')
out.write('first %d\n' % s.getsockname()[1]); out.flush()
time.sleep(0.15)
unspec = struct.pack('H14x', 0)
if libc.connect(s.fileno(), unspec, len(unspec)) != 0:
    raise OSError(ctypes.get_errno(), 'connect(AF_UNSPEC)')
s.connect(('127.0.0.1', P4))
s.sendall(hello('again.wire.test'))
out.write('again %d\n' % s.getsockname()[1]); out.flush()
time.sleep(0.1)
s.close()
"#,
    );
    let e = labelled(&d, pid, &ports, "tfo");
    assert_eq!(e["http_method"], "GET", "{e}");
    assert_eq!(e["http_path"], "/v1/charges", "{e}");
    assert_eq!(e["http_host"], "api.wire.test", "{e}");
    assert_ne!(ports["first"], ports["again"], "another connection");
    let e = labelled(&d, pid, &ports, "again");
    assert_eq!(e["sni"], "again.wire.test", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
}

/// A full holder set gets room again while records keep coming (a process started and ended
/// every millisecond or so): the daemon waits only for the records written before the refusals
/// stopped to be read, not for a moment with nothing in the ring buffer, which a busy host
/// seldom has (the decision itself: `app::daemon::tests`; this load is too light to keep the
/// ring from being empty at every tick here, a host with many CPUs is not).
#[test]
fn a_full_holder_set_has_room_again_while_records_keep_coming() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-full-busy");
    let d = Daemon::start_with(
        &registry(&cred, "      - cidr: 127.0.0.1/32\n"),
        &["--holder-set-max".as_ref(), "64".as_ref()],
    );
    let group = |c: &mut Command| {
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe, as pre_exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(c, || {
                libc::setsid();
                Ok(())
            });
        }
    };
    let mut filler = Command::new("sh");
    filler.args([
        "-c",
        &format!(
            "exec 3<'{}'; for i in $(seq 80); do sleep 60 & done; echo filled; wait",
            cred.display()
        ),
    ]);
    group(&mut filler);
    let mut filler = filler.spawn().expect("sh");
    let mut line = String::new();
    BufReader::new(filler.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the filler's children are started");
    d.wait_output(WAIT, 0, |l| l.contains("the kernel's holder set is full"));
    // A steady trickle of records (a process started and ended every 5 ms), as on a busy host.
    let mut busy = Command::new(PYTHON);
    busy.args([
        "-c",
        "import os, time\nprint('busy', flush=True)\nwhile True:\n    \
         p = os.fork()\n    if p == 0: os._exit(0)\n    os.waitpid(p, 0)\n    time.sleep(0.001)\n",
    ]);
    group(&mut busy);
    let mut busy = busy.spawn().expect("python3");
    let mut line = String::new();
    BufReader::new(busy.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("busy");
    // SAFETY: plain kill(2)s of the process groups setsid made above.
    unsafe {
        libc::kill(-(filler.id() as i32), libc::SIGKILL);
    }
    let _ = filler.wait();
    let has_room = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_output(WAIT, 0, |l| l.contains("holder set has room again"))
    }));
    // SAFETY: as above.
    unsafe {
        libc::kill(-(busy.id() as i32), libc::SIGKILL);
    }
    let _ = busy.wait();
    assert!(
        has_room.is_ok(),
        "the set stayed full while records kept coming"
    );
}
