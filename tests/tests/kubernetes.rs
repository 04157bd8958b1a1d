//! Kubernetes: pod and container names on events, the DaemonSet of deploy/kubernetes, and the
//! image of deploy/container.
//!
//! A pod here is what the kubelet leaves on a node: a cgroup under `kubepods.slice` named after
//! the pod's UID and the container's id (made by the test in the real cgroup v2 tree, with a real
//! process moved into it), and the kubelet's log directories (made in a temporary directory the
//! daemon is pointed at with `--pods-log-dir` and `--containers-log-dir`).
//!
//! The DaemonSet is held to the daemon: its arguments through the daemon's own parser, its
//! capabilities by running the daemon with exactly those (`setpriv`, as a container runtime
//! bounds them) and without each of the ones attaching needs, its image by building it
//! (deploy/container/build-image.sh, podman) and running the daemon in it.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser as _;
use nhiscope_tests::{
    cgroup2_root, clickhouse::ClickHouse, nhiscope_bin, require_root_bpf, temp_dir, Daemon,
};
use serde_json::Value;
use serde_norway::Value as Yaml;

const WAIT: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A pod as a node shows it: its container's cgroup (removed on drop) and the kubelet's log
/// directories.
struct FakePod {
    uid: String,
    container_id: String,
    /// `.../kubepods-burstable-pod<UID>.slice/cri-containerd-<ID>.scope`, and the slices above
    /// it that this pod made.
    cgroups: Vec<PathBuf>,
    pods_dir: PathBuf,
    containers_dir: PathBuf,
}

impl FakePod {
    fn new(dir: &Path, namespace: &str, pod: &str, container: &str) -> FakePod {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let pid = std::process::id();
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            pid,
            n & 0xffff,
            (n >> 16) & 0xfff,
            (n >> 28) & 0xfff,
            (n >> 40) & 0xffff_ffff_ffff
        );
        let container_id = format!("{:016x}{:016x}{:032x}", pid, n as u64, n);
        let slice = cgroup2_root().join("kubepods.slice");
        let qos = slice.join("kubepods-burstable.slice");
        let pod_slice = qos.join(format!(
            "kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        ));
        let scope = pod_slice.join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&scope)
            .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", scope.display()));
        let pods_dir = dir.join("pods");
        let containers_dir = dir.join("containers");
        let log = pods_dir
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container)
            .join("0.log");
        std::fs::create_dir_all(log.parent().expect("parent")).expect("pod log dir");
        std::fs::write(&log, "").expect("pod log");
        std::fs::create_dir_all(&containers_dir).expect("containers dir");
        std::os::unix::fs::symlink(
            &log,
            containers_dir.join(format!("{pod}_{namespace}_{container}-{container_id}.log")),
        )
        .expect("container log link");
        FakePod {
            uid,
            container_id,
            // Innermost first; the shared slices go only if no other test's pod is in them.
            cgroups: vec![scope, pod_slice, qos, slice],
            pods_dir,
            containers_dir,
        }
    }

    fn scope(&self) -> &Path {
        &self.cgroups[0]
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        for cg in &self.cgroups {
            // Fails while processes are in it or another pod shares it: then it stays.
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// Reads the live feed until an event for which `pred` holds, or panics after `WAIT`.
fn live_event(reader: &mut BufReader<UnixStream>, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    let mut line = Vec::new();
    loop {
        assert!(
            started.elapsed() < WAIT,
            "no such event on the live feed in {WAIT:?}"
        );
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("the live feed closed"),
            Ok(_) if line.ends_with(b"\n") => {}
            // A read timeout: the line so far stays in `line`.
            _ => continue,
        }
        let m: Value = serde_json::from_slice(&line).expect("a live message");
        line.clear();
        if m["type"] == "event" && pred(&m["event"]) {
            return m["event"].clone();
        }
    }
}

fn assert_pod_fields(e: &Value, pod: &FakePod, what: &str) {
    assert_eq!(e["pod_uid"], pod.uid.as_str(), "{what}: {e}");
    assert_eq!(e["pod"], "billing-worker-7d9f8", "{what}: {e}");
    assert_eq!(e["pod_namespace"], "payments", "{what}: {e}");
    assert_eq!(e["container"], pod.container_id.as_str(), "{what}: {e}");
    assert_eq!(e["container_name"], "uploader", "{what}: {e}");
}

#[test]
fn a_process_in_a_pod_carries_its_pod_and_container_names_to_every_output() {
    if !require_root_bpf() {
        return;
    }
    let Some(ch) = ClickHouse::start("kubernetes") else {
        return;
    };
    let dir = temp_dir("kubernetes");
    let cred = dir.join("aws-credentials");
    std::fs::write(&cred, "[default]\n").expect("credential");
    let pod = FakePod::new(&dir, "payments", "billing-worker-7d9f8", "uploader");
    let registry = format!(
        "nhis:\n  - id: billing\n    credentials: [{}]\n",
        cred.display()
    );
    // The spool in the test's own directory: the default one (/var/lib/nhiscope/spool) is the
    // installed service's.
    let ch_config = dir.join("clickhouse.yaml");
    std::fs::write(
        &ch_config,
        format!(
            "url: {}\nspool_dir: {}\n",
            ch.url(),
            dir.join("spool").display()
        ),
    )
    .expect("clickhouse.yaml");
    let d = Daemon::start_with(
        &registry,
        &[
            "--pods-log-dir".as_ref(),
            pod.pods_dir.as_os_str(),
            "--containers-log-dir".as_ref(),
            pod.containers_dir.as_os_str(),
            "--clickhouse-config".as_ref(),
            ch_config.as_os_str(),
        ],
    );
    let live = UnixStream::connect(d.live_socket()).expect("the live socket");
    live.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut live = BufReader::new(live);

    // The shell moves itself into the pod's container cgroup, then reads the credential and
    // waits for its standard input to close: alive until the daemon has placed it.
    let procs = pod.scope().join("cgroup.procs");
    let mut in_pod_proc = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec sh -c 'cat \"$0\" > /dev/null && {{ read x; true; }}' '{}'",
            procs.display(),
            cred.display()
        ))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    // The same file read from outside any pod.
    let mut outside_cat = Command::new("cat")
        .arg(&cred)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cat");
    let outside_pid = outside_cat.id();
    assert!(outside_cat.wait().expect("cat").success());

    let path = cred.to_string_lossy().into_owned();
    let is_open = |e: &Value| e["kind"] == "open" && e["path"] == path.as_str();
    let in_pod = d.wait_for(WAIT, |e| is_open(e) && e["pid"] != outside_pid);
    drop(in_pod_proc.stdin.take());
    let status = in_pod_proc.wait().expect("wait");
    assert!(status.success(), "the process in the pod failed: {status}");
    assert_pod_fields(&in_pod, &pod, "JSON line");
    assert_eq!(in_pod["nhi"], "billing");
    let outside = d.wait_for(WAIT, |e| is_open(e) && e["pid"] == outside_pid);
    for key in ["pod", "pod_namespace", "container_name", "container"] {
        assert!(outside.get(key).is_none(), "{key} outside a pod: {outside}");
    }
    let on_feed = live_event(&mut live, |e| is_open(e) && e["pid"] != outside_pid);
    assert_pod_fields(&on_feed, &pod, "live feed");

    // And in ClickHouse, once the batch is in.
    let sql = format!(
        "SELECT pod_uid, pod, pod_namespace, container, container_name FROM nhiscope.events \
         WHERE path = '{path}' AND pod_uid != ''"
    );
    let started = Instant::now();
    let row = loop {
        // Once the daemon has brought the schema to its version.
        let migrated = ch.query("EXISTS TABLE nhiscope.schema_migrations").trim() == "1"
            && ch.query_u64("SELECT max(version) FROM nhiscope.schema_migrations")
                >= u64::from(nhiscope::publish::store::schema::latest_version());
        if migrated {
            if let Some(row) = ch.query_json(&sql).into_iter().next() {
                break row;
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "no row in ClickHouse within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_pod_fields(&row, &pod, "ClickHouse row");
    assert!(d.stop().success());
}

/// The DaemonSet's documents, parsed.
fn manifest() -> Vec<Yaml> {
    let path = workspace().join("deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| <Yaml as serde::Deserialize>::deserialize(d).expect("YAML"))
        .collect()
}

fn doc<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"))
}

fn text(v: &Yaml) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The container's capabilities, as `cap_*` names for setpriv.
fn capabilities(docs: &[Yaml]) -> Vec<String> {
    let c = &doc(docs, "DaemonSet", "nhiscope")["spec"]["template"]["spec"]["containers"][0];
    c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|v| text(v).to_ascii_lowercase())
        .collect()
}

/// The container's arguments, with the downward API's variables given values.
fn daemon_args(docs: &[Yaml]) -> Vec<String> {
    let c = &doc(docs, "DaemonSet", "nhiscope")["spec"]["template"]["spec"]["containers"][0];
    c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| {
            text(a)
                .replace("$(NODE_NAME)", "node-1")
                .replace("$(NODE_IP)", "10.0.0.7")
        })
        .collect()
}

#[test]
fn the_daemonset_runs_the_daemon_as_it_expects_to_be_run() {
    let docs = manifest();
    let ds = doc(&docs, "DaemonSet", "nhiscope");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], Yaml::Bool(true));
    assert_eq!(pod["hostNetwork"], Yaml::Bool(true));
    assert!(
        pod["tolerations"]
            .as_sequence()
            .expect("tolerations")
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the DaemonSet must tolerate every taint"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], Yaml::Bool(false));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let caps: BTreeSet<String> = capabilities(&docs).into_iter().collect();
    let want: BTreeSet<String> = [
        "bpf",
        "perfmon",
        "net_admin",
        "sys_ptrace",
        "dac_read_search",
        "setpcap",
    ]
    .map(String::from)
    .into();
    assert_eq!(caps, want);

    // Every argument is one the daemon takes, with a value it accepts.
    let args = daemon_args(&docs);
    let cli = nhiscope::app::cli::Cli::try_parse_from(
        std::iter::once("nhiscope".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("the DaemonSet's arguments {args:?}: {e}"));
    let nhiscope::app::cli::Command::Daemon(d) = cli.command else {
        panic!("the DaemonSet does not run the daemon: {args:?}");
    };

    // The probes and the port reach --metrics, and /healthz is what it serves.
    let metrics = d.metrics.expect("--metrics");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_u64(),
            Some(u64::from(metrics.port())),
            "{probe}"
        );
    }
    assert_eq!(
        c["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(metrics.port()))
    );

    // What the daemon reads and writes is mounted, from the node or a ConfigMap.
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .map(|m| (text(&m["mountPath"]), text(&m["name"])))
        .collect();
    let volume = |name: &str| -> &Yaml {
        pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mounted = |path: &Path| -> &Yaml {
        let (_, name) = mounts
            .iter()
            .filter(|(at, _)| path.starts_with(at))
            .max_by_key(|(at, _)| at.len())
            .unwrap_or_else(|| panic!("{} is not on any mount", path.display()));
        volume(name)
    };
    for node_path in [
        "/sys/kernel/tracing",
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/var/log/pods",
        "/var/log/containers",
    ] {
        assert_eq!(
            mounted(Path::new(node_path))["hostPath"]["path"],
            node_path,
            "{node_path}"
        );
    }
    assert_eq!(
        mounted(&d.pods_log_dir)["hostPath"]["path"],
        "/var/log/pods"
    );
    assert_eq!(
        mounted(&d.containers_log_dir)["hostPath"]["path"],
        "/var/log/containers"
    );
    assert!(mounted(&d.live_socket)["hostPath"]["path"].is_string());
    // The node's resolvers, not the pod's (which name the cluster's DNS service).
    assert_eq!(
        mounted(&d.resolv_conf)["hostPath"]["path"],
        "/etc/resolv.conf"
    );

    // The registry and the ClickHouse settings come from ConfigMaps, and are valid.
    let from_config_map = |file: &Path| -> String {
        let v = mounted(file);
        let cm = doc(&docs, "ConfigMap", text(&v["configMap"]["name"]));
        let key = file.file_name().expect("file").to_string_lossy();
        text(&cm["data"][key.as_ref()]).to_owned()
    };
    let dir = temp_dir("daemonset");
    let registry = dir.join("registry.yaml");
    let registry_file = d.registry.as_deref().expect("--registry in the DaemonSet");
    std::fs::write(&registry, from_config_map(registry_file)).expect("registry");
    let out = Command::new(nhiscope_bin())
        .args(["registry", "check"])
        .arg(&registry)
        .output()
        .expect("nhiscope registry check");
    assert!(
        out.status.success(),
        "the ConfigMap's registry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ch_file = d
        .clickhouse
        .clickhouse_config
        .clone()
        .expect("--clickhouse-config");
    let ch_yaml = from_config_map(&ch_file);
    let ch_config: Yaml = serde_norway::from_str(&ch_yaml).expect("clickhouse.yaml");
    let spool = Path::new(text(&ch_config["spool_dir"]));
    assert_eq!(mounted(spool)["hostPath"]["path"], "/var/lib/nhiscope");
    let secret = Path::new(text(&ch_config["password_file"]));
    assert!(mounted(secret)["secret"]["secretName"].is_string());
    // Checked as the daemon reads it, with the password file where this test can write it.
    let password = dir.join("password");
    std::fs::write(&password, "s3cret\n").expect("password");
    let ch_local = dir.join("clickhouse.yaml");
    std::fs::write(
        &ch_local,
        ch_yaml.replace(
            &secret.to_string_lossy().into_owned(),
            &password.to_string_lossy(),
        ),
    )
    .expect("clickhouse.yaml");
    let config =
        nhiscope::publish::store::StoreConfig::load(Some(&ch_local), None, None, &|_| None)
            .unwrap_or_else(|e| panic!("the ConfigMap's clickhouse.yaml: {e}"))
            .expect("a ClickHouse URL");
    assert_eq!(config.spool_dir, spool);

    // Memory: the DESIGN's bound under floods (64 MB RSS) fits in the limit.
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    let limit = text(&c["resources"]["limits"]["memory"]);
    let mib: u64 = limit
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .expect("a limit in Mi");
    assert!(mib >= 64, "memory limit {limit}");
}

/// `setpriv` keeping exactly `caps` (`bpf`, `net_admin`, ...) in the bounding set, as a
/// container runtime does.
fn setpriv(caps: &[String]) -> Vec<String> {
    let keep: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    vec![
        "setpriv".into(),
        "--bounding-set".into(),
        format!("-all,{}", keep.join(",")),
        "--inh-caps".into(),
        "-all".into(),
    ]
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_the_attaching_ones_each_needed() {
    if !require_root_bpf() {
        return;
    }
    let caps = capabilities(&manifest());
    let dir = temp_dir("caps");
    let cred = dir.join("token");
    std::fs::write(&cred, "t").expect("credential");
    let registry = format!("nhis:\n  - id: ci\n    credentials: [{}]\n", cred.display());

    let wrapper = setpriv(&caps);
    let wrapper: Vec<&OsStr> = wrapper.iter().map(OsStr::new).collect();
    let d = Daemon::start_wrapped(&wrapper, &registry, &[]);
    let status = Command::new("cat")
        .arg(&cred)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat");
    assert!(status.success());
    let path = cred.to_string_lossy().into_owned();
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["path"] == path.as_str());
    assert_eq!(e["nhi"], "ci");
    assert!(d.stop().success());

    // Without any one of these the daemon does not start (and says why).
    for (missing, says) in [
        ("bpf", "map"),
        ("perfmon", "tracepoint"),
        ("net_admin", "cgroup"),
        ("setpcap", "PR_CAPBSET_DROP"),
    ] {
        assert!(caps.iter().any(|c| c == missing), "{missing}");
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = setpriv(&fewer);
        let reg = dir.join("registry.yaml");
        std::fs::write(&reg, &registry).expect("registry");
        let out = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(nhiscope_bin())
            .args(["daemon", "--registry"])
            .arg(&reg)
            .arg("--live-socket")
            .arg(dir.join(format!("{missing}.sock")))
            .output()
            .expect("setpriv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !stderr.contains("ready:"),
            "started without {missing}: {stderr}"
        );
        assert!(stderr.contains(says), "without {missing}: {stderr}");
    }
}

/// Whether `tool` is on the PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `podman` (with runc, see deploy/container/build-image.sh) and returns its stdout;
/// panics with its stderr when it fails.
#[track_caller]
fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the container and the image on drop.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "5", &self.container])
            .output();
        let _ = Command::new("podman").args(["rmi", &self.image]).output();
    }
}

#[test]
fn the_image_runs_the_daemon_with_the_daemonsets_capabilities() {
    if !require_root_bpf() {
        return;
    }
    let missing: Vec<&str> = ["podman", "runc", "debootstrap"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} missing (cargo xtask setup installs them)",
            missing.join(", ")
        );
        if std::env::var_os("NHISCOPE_REQUIRE_BPF").is_some_and(|v| v == "1") {
            panic!("this test needs {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let docs = manifest();
    let caps = capabilities(&docs);
    let ds = doc(&docs, "DaemonSet", "nhiscope");
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    assert_eq!(sc["readOnlyRootFilesystem"], Yaml::Bool(true));

    let pid = std::process::id();
    let cleanup = Cleanup {
        container: format!("nhiscope-test-{pid}"),
        image: format!("localhost/nhiscope-test:{pid}"),
    };
    let root = workspace();
    let build = Command::new(root.join("deploy/container/build-image.sh"))
        .arg(nhiscope_bin())
        .arg(&cleanup.image)
        .env("NHISCOPE_ROOTFS", root.join("target/container/rootfs"))
        .output()
        .expect("build-image.sh");
    assert!(
        build.status.success(),
        "build-image.sh: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    let dir = temp_dir("container");
    let cred = dir.join("deploy-key");
    std::fs::write(&cred, "k").expect("credential");
    std::fs::write(
        dir.join("registry.yaml"),
        format!(
            "nhis:\n  - id: deploy\n    credentials: [{}]\n",
            cred.display()
        ),
    )
    .expect("registry");
    std::fs::create_dir_all(dir.join("run")).expect("run dir");
    let pod = FakePod::new(&dir, "ci", "runner-5c6d", "uploader");
    let cgroup = cgroup2_root();
    let d = dir.display().to_string();
    let cap_add = caps.join(",").to_ascii_uppercase();
    let nofile = "nofile=1024:1024";
    let mut args = vec![
        "run",
        "-d",
        "--pull=never",
        "--name",
        &cleanup.container,
        "--pid=host",
        "--network=host",
        "--read-only",
        "--cap-drop=all",
        "--cap-add",
        &cap_add,
        "--security-opt",
        "seccomp=unconfined",
        // Limits no higher than this process's (see build-image.sh).
        "--ulimit",
        nofile,
        "--ulimit",
        "nproc=32768:32768",
    ];
    let mounts = [
        "/sys/kernel/tracing:/sys/kernel/tracing:ro".to_owned(),
        format!("{0}:{0}:ro", cgroup.display()),
        format!("{d}:{d}"),
        format!("{d}/run:/run/nhiscope"),
    ];
    for m in &mounts {
        args.extend(["-v", m]);
    }
    let registry = format!("{d}/registry.yaml");
    let events = format!("{d}/events.jsonl");
    let (pods, containers) = (
        pod.pods_dir.display().to_string(),
        pod.containers_dir.display().to_string(),
    );
    args.extend([
        &cleanup.image,
        "daemon",
        "--registry",
        &registry,
        "--json",
        &events,
        "--live-socket",
        "/run/nhiscope/live.sock",
        "--pods-log-dir",
        &pods,
        "--containers-log-dir",
        &containers,
    ]);
    podman(&args);

    let started = Instant::now();
    loop {
        let logs = Command::new("podman")
            .args(["logs", &cleanup.container])
            .output()
            .expect("podman logs");
        let text = String::from_utf8_lossy(&logs.stderr).into_owned()
            + &String::from_utf8_lossy(&logs.stdout);
        if text.contains("ready:") {
            break;
        }
        let state = podman(&["inspect", "-f", "{{.State.Running}}", &cleanup.container]);
        assert!(
            state.trim() == "true",
            "the daemon stopped in its container:\n{text}"
        );
        assert!(
            started.elapsed() < WAIT,
            "not ready in its container within {WAIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A process in a pod reads the credential; the daemon in its container names the pod.
    let mut proc_in_pod = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec sh -c 'cat \"$0\" > /dev/null && {{ read x; true; }}' '{}'",
            pod.scope().join("cgroup.procs").display(),
            cred.display()
        ))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let path = cred.to_string_lossy().into_owned();
    let started = Instant::now();
    let event = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if let Some(e) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["kind"] == "open" && e["path"] == path.as_str())
        {
            break e;
        }
        assert!(
            started.elapsed() < WAIT,
            "no event from the daemon in its container within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(proc_in_pod.stdin.take());
    assert!(proc_in_pod.wait().expect("wait").success());
    assert_eq!(event["nhi"], "deploy", "{event}");
    assert_eq!(event["pod"], "runner-5c6d", "{event}");
    assert_eq!(event["pod_namespace"], "ci", "{event}");
    assert_eq!(event["container_name"], "uploader", "{event}");
    assert_eq!(event["pod_uid"], pod.uid.as_str(), "{event}");
    // SIGTERM: the daemon flushes and exits 0.
    podman(&["stop", "-t", "10", &cleanup.container]);
    let code = podman(&["inspect", "-f", "{{.State.ExitCode}}", &cleanup.container]);
    assert_eq!(code.trim(), "0");
}

#[test]
fn a_registry_from_a_config_map_is_reloaded_when_the_kubelet_swaps_it() {
    if !require_root_bpf() {
        return;
    }
    let dir = temp_dir("configmap");
    let (old_cred, new_cred) = (dir.join("old-token"), dir.join("new-token"));
    for c in [&old_cred, &new_cred] {
        std::fs::write(c, "t").expect("credential");
    }
    let registry = |id: &str, cred: &Path| {
        format!(
            "nhis:\n  - id: {id}\n    credentials: [{}]\n",
            cred.display()
        )
    };
    let d = Daemon::start(&registry("old", &old_cred));
    // The kubelet's layout: registry.yaml -> ..data/registry.yaml, ..data -> ..<timestamp>,
    // an update being a new timestamped directory and ..data renamed over to point at it.
    let mount = d.dir();
    let version = |n: u32, yaml: &str| {
        let v = mount.join(format!("..2026_11_30_00_00_0{n}.000"));
        std::fs::create_dir(&v).expect("version dir");
        std::fs::write(v.join("registry.yaml"), yaml).expect("registry");
        let tmp = mount.join("..data_tmp");
        std::os::unix::fs::symlink(v.file_name().expect("name"), &tmp).expect("symlink");
        std::fs::rename(&tmp, mount.join("..data")).expect("swap ..data");
    };
    version(1, &registry("old", &old_cred));
    let file = mount.join("registry.yaml");
    let tmp = mount.join("registry.yaml.tmp");
    std::os::unix::fs::symlink("..data/registry.yaml", &tmp).expect("symlink");
    std::fs::rename(&tmp, &file).expect("registry.yaml as a link");
    // That replacement is a change of its own: once it is reloaded, only the swap of ..data
    // (registry.yaml itself untouched) can bring the new registry in.
    let reloads = || {
        d.output()
            .iter()
            .filter(|l| l.contains("changed: reloading"))
            .count()
    };
    let started = Instant::now();
    while reloads() == 0 {
        assert!(started.elapsed() < WAIT, "no reload: {:?}", d.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    version(2, &registry("new", &new_cred));

    let path = new_cred.to_string_lossy().into_owned();
    let started = Instant::now();
    loop {
        let status = Command::new("cat")
            .arg(&new_cred)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("cat");
        assert!(status.success());
        if d.events()
            .iter()
            .any(|e| e["path"] == path.as_str() && e["nhi"] == "new")
        {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the swapped registry was not loaded within {WAIT:?}: {:?}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.stop().success());
}
