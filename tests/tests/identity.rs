//! Identity from the kernel's objects, tried as an attacker would: every spelling and alias of a
//! registered file is that file, a process is the file the kernel executed (a script is judged
//! by its interpreter and by itself), a replaced credential is recognised at once, and no
//! unprivileged process can blind the open probes. Real processes against the real daemon.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    os::unix::fs::MetadataExt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{
    procs::{canon, run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A directory with `app/token` in it, registered as NHI `app`.
struct Fixture {
    dir: PathBuf,
    cred: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
        std::fs::create_dir_all(dir.join("app")).expect("dir");
        let cred = dir.join("app/token");
        std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
        Self { dir, cred }
    }

    fn registry(&self, extra: &str) -> String {
        format!(
            "nhis:\n  - id: app\n    credentials:\n      - {}\n{extra}",
            self.cred.display()
        )
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn opens_by(d: &Daemon, pid: u32) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| e["kind"] == "open" && e["pid"] == pid)
        .collect()
}

#[test]
fn every_spelling_and_alias_of_a_registered_file_is_that_file() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("spellings");
    std::os::unix::fs::symlink(f.dir.join("app"), f.dir.join("applink")).expect("dir symlink");
    std::os::unix::fs::symlink(&f.cred, f.dir.join("tokenlink")).expect("file symlink");
    std::fs::hard_link(&f.cred, f.dir.join("notes.txt")).expect("hard link");
    let long = format!("{}/app{}/token", s(&f.dir), "/.".repeat(150));
    let d = Daemon::start(&f.registry(""));
    // One process opens the file every way it can be named; each open must be one event.
    let spellings: Vec<String> = vec![
        format!("{}/app//token", s(&f.dir)),
        format!("{}/app/./token", s(&f.dir)),
        format!("{}/app/../app/token", s(&f.dir)),
        "app/token".into(),
        "./app/../app/token".into(),
        "/proc/self/cwd/app/token".into(),
        format!("/proc/self/root{}", s(&f.cred)),
        format!("{}/applink/token", s(&f.dir)),
        format!("{}/tokenlink", s(&f.dir)),
        format!("{}/notes.txt", s(&f.dir)),
        long.clone(),
    ];
    let code = format!(
        "import os, sys\n\
         for p in sys.argv[1:]:\n    os.close(os.open(p, os.O_RDONLY))\n\
         d = os.open('app', os.O_RDONLY)\n\
         os.close(os.open('token', os.O_RDONLY, dir_fd=d))\n\
         fd = os.open('{cred}', os.O_RDONLY)\n\
         os.close(os.open('/proc/self/fd/%d' % fd, os.O_RDONLY))\n",
        cred = s(&f.cred)
    );
    let pid = run(Command::new(PYTHON)
        .arg("-c")
        .arg(&code)
        .args(&spellings)
        .current_dir(&f.dir));
    // The spellings, the dirfd-relative one, the plain one and the /proc/self/fd reopen.
    let want = spellings.len() + 3;
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = opens_by(&d, pid);
    while seen.len() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = opens_by(&d, pid);
    }
    assert_eq!(seen.len(), want, "{seen:#?}");
    for e in &seen {
        assert_eq!(e["path"], s(&f.cred), "{e}");
        assert_eq!(e["nhi"], "app", "{e}");
    }
    let args: Vec<&str> = seen.iter().filter_map(|e| e["path_arg"].as_str()).collect();
    for sp in spellings.iter().filter(|sp| **sp != long) {
        assert!(args.contains(&sp.as_str()), "{sp} not seen: {args:?}");
    }
    // The path argument is kept as asked, cut at 255 bytes; the file is still the file.
    assert!(
        args.iter().any(|a| a.len() == 255 && long.starts_with(a)),
        "{args:?}"
    );
    // The hard link is reported under the registered path, with its own name as the target.
    let hard = f.dir.join("notes.txt");
    assert!(seen.iter().any(|e| e["target"] == s(&hard)), "{seen:#?}");
    // Another file in the same directory is not a credential and is not reported.
    std::fs::write(f.dir.join("app/readme"), "x").expect("file");
    let other = run(Command::new("cat")
        .arg(f.dir.join("app/readme"))
        .stdout(Stdio::null()));
    let marker = run(Command::new("cat").arg(&f.cred).stdout(Stdio::null()));
    d.wait_for(WAIT, |e| e["pid"] == marker && e["kind"] == "open");
    assert!(opens_by(&d, other).is_empty(), "{:?}", opens_by(&d, other));
}

#[test]
fn a_process_is_the_file_the_kernel_executed() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("exe-identity");
    let d = Daemon::start(&f.registry(""));
    let cat = canon("cat");
    let python = std::fs::canonicalize(PYTHON).expect("python");
    // Re-executing itself through /proc/self/exe: the daemon must not resolve that link in its
    // own context (it would name its own binary).
    let code = format!(
        "import os\n\
         os.execv('/proc/self/exe', ['renamed', '-c', 'import sys; open(sys.argv[1]).read()', '{cred}'])\n",
        cred = s(&f.cred)
    );
    let p1 = run(Command::new(PYTHON).arg("-c").arg(&code));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == p1);
    assert_eq!(e["exe"], s(&python), "{e}");
    // fexecve: an exec of an open descriptor, with no name at all.
    let code = format!(
        "import os\nfd = os.open('{cat}', os.O_RDONLY)\nos.execve(fd, ['cat', '{cred}'], {{}})\n",
        cred = s(&f.cred)
    );
    let p2 = run(Command::new(PYTHON)
        .arg("-c")
        .arg(&code)
        .stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == p2);
    assert_eq!(e["exe"], cat.as_str(), "{e}");
    // A relative name through `..` and a symlinked directory.
    let bin = Path::new(&cat).parent().expect("bin dir").to_path_buf();
    std::os::unix::fs::symlink(&bin, f.dir.join("binlink")).expect("symlink");
    let name = f
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("dir name");
    let p3 = run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && exec ../{name}/binlink/./cat {} >/dev/null",
        s(&f.dir),
        s(&f.cred)
    )));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == p3);
    assert_eq!(e["exe"], cat.as_str(), "{e}");
}

#[test]
fn a_script_is_judged_by_its_interpreter_and_by_itself() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("script");
    let script = f.dir.join("tool.py");
    std::fs::write(
        &script,
        format!("#!{PYTHON}\nopen('{}').read()\n", s(&f.cred)),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let python = std::fs::canonicalize(PYTHON).expect("python");
    // The README's own way of naming an interpreter: every Python tool is allowed.
    let d = Daemon::start(&f.registry("    readers:\n      exe: [/usr/bin/python3*]\n"));
    let pid = run(Command::new("./tool.py").current_dir(&f.dir));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["exe"], s(&python), "{e}");
    assert_eq!(e["script"], s(&script), "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
    drop(d);
    // Naming the script itself works too, and another script of the same interpreter drifts.
    let d = Daemon::start(&f.registry(&format!("    readers:\n      exe: [{}]\n", s(&script))));
    let pid = run(&mut Command::new(&script));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["verdict"], "ok", "{e}");
    let other = f.dir.join("other.py");
    std::fs::copy(&script, &other).expect("copy");
    let pid = run(&mut Command::new(&other));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["script"], s(&other), "{e}");
    // A script of the caller's, named so that folding `..` would spell the allowed one: after
    // a symlinked directory the kernel climbs from the link's target.
    // cwd/hop -> evil/a/b: `hop/../../tool.py` folds to the allowed tool.py, runs evil/tool.py.
    let evil = f.dir.join("evil");
    std::fs::create_dir_all(evil.join("a/b")).expect("dir");
    std::fs::copy(&script, evil.join("tool.py")).expect("copy");
    let cwd = f.dir.join("cwd");
    std::fs::create_dir_all(&cwd).expect("dir");
    std::os::unix::fs::symlink(evil.join("a/b"), cwd.join("hop")).expect("symlink");
    assert_eq!(
        nhiscope::domain::resolve::normalize(&cwd.join("hop/../../tool.py")),
        script,
        "the lexical folding spells the allowed script"
    );
    let pid = run(Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && exec ./hop/../../tool.py", s(&cwd))));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_ne!(e["script"], s(&script), "{e}");
}

#[test]
fn a_replaced_credential_and_a_new_file_of_a_glob_are_seen_at_once() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("rotation");
    std::fs::create_dir_all(f.dir.join("secrets")).expect("dir");
    let glob = f.dir.join("secrets/*.json");
    let d = Daemon::start(&format!(
        "{}  - id: json\n    credentials:\n      - {}\n",
        f.registry(""),
        s(&glob)
    ));
    // Rotation as deploy tools do it: a new file renamed over the old one.
    let fresh = f.dir.join("app/.token.new");
    std::fs::write(&fresh, "rotated\n").expect("new file");
    std::fs::rename(&fresh, &f.cred).expect("rename over");
    let pid = run(Command::new("cat").arg(&f.cred).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["nhi"], "app", "{e}");
    // Within a second the new file's inode is known: a hard link to it is the credential.
    std::thread::sleep(Duration::from_millis(1500));
    let link = f.dir.join("innocent-name");
    std::fs::hard_link(&f.cred, &link).expect("hard link");
    let pid = run(Command::new("cat").arg(&link).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["nhi"], "app", "{e}");
    assert_eq!(e["path"], s(&f.cred), "{e}");
    // A file created after the start that matches a registered glob.
    let new = f.dir.join("secrets/db.json");
    std::fs::write(&new, "{}").expect("new json");
    let pid = run(Command::new("cat").arg(&new).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["nhi"], "json", "{e}");
    drop(d);

    // A rotation frees the old file's inode number, and the filesystem may give it to the next
    // new file at once: until the daemon's next look at the disk (a second), that number is
    // still the credential's. A new file that got it is not the credential.
    let d = Daemon::start(&format!(
        "{}  - id: json\n    credentials:\n      - {}\n",
        f.registry(""),
        s(&glob)
    ));
    std::fs::remove_file(&link).expect("unlink the hard link");
    let old_ino = std::fs::metadata(&f.cred).expect("stat").ino();
    let fresh = f.dir.join("app/.token.new");
    std::fs::write(&fresh, "rotated again\n").expect("new file");
    std::fs::rename(&fresh, &f.cred).expect("rename over");
    let reused = (0..64)
        .map(|i| f.dir.join(format!("secrets/reused-{i}.json")))
        .find(|p| {
            std::fs::write(p, "{}").expect("new json");
            std::fs::metadata(p).expect("stat").ino() == old_ino
        })
        .expect("the filesystem gave the freed inode number to none of 64 new files");
    let pid = run(Command::new("cat").arg(&reused).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["inode"], old_ino, "{e}");
    assert_eq!(e["nhi"], "json", "{e}");
    assert_eq!(e["path"], s(&reused), "{e}");
}

#[test]
fn blocked_opens_of_watched_names_do_not_blind_the_probes() {
    if !require_root_bpf() {
        return;
    }
    let f = Fixture::new("fifo");
    // FIFOs with the credential's own name pattern, each open blocking until a writer comes.
    let fifos = f.dir.join("fifos");
    std::fs::create_dir_all(&fifos).expect("dir");
    let d = Daemon::start(&format!(
        "{}  - id: fifo\n    credentials:\n      - {}/*.key\n",
        f.registry(""),
        s(&fifos)
    ));
    let mut blocked = Vec::new();
    for i in 0..64 {
        let p = fifos.join(format!("f{i}.key"));
        let c = std::ffi::CString::new(s(&p)).expect("cstr");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        blocked.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec 3< {}", s(&p)))
                .spawn()
                .expect("spawn"),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = run(Command::new("cat").arg(&f.cred).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["nhi"], "app", "{e}");
    for mut b in blocked {
        let _ = b.kill();
        let _ = b.wait();
    }
}
