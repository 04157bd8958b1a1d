//! The other doors to a file, tried as a process that wants to avoid the open system calls
//! would: io_uring (into the file table and into a fixed-file slot), `open_by_handle_at`; and
//! the one door this kernel leaves open (32-bit system calls), which the daemon must name.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{procs::run, require_root_bpf, temp_dir, Daemon};

const WAIT: Duration = Duration::from_secs(10);

fn credential(name: &str) -> (PathBuf, String) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
    std::fs::create_dir_all(dir.join("app")).expect("dir");
    let cred = dir.join("app/token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    let reg = format!(
        "nhis:\n  - id: app\n    credentials:\n      - {}\n",
        cred.display()
    );
    (cred, reg)
}

/// tests/helpers/uring_open.c, built for this test run (gcc and liburing-dev come from
/// `cargo xtask setup`).
fn uring_open() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/uring_open.c");
    let out = temp_dir("uring-helper").join("uring_open");
    let st = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-luring")
        .status()
        .expect("gcc");
    assert!(st.success(), "building {} failed", src.display());
    out
}

#[test]
fn io_uring_opens_are_seen() {
    if !require_root_bpf() {
        return;
    }
    let helper = uring_open();
    let (cred, reg) = credential("uring");
    let d = Daemon::start(&reg);
    let pid = run(Command::new(&helper).arg(&cred).stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["syscall"], "io_uring_openat", "{e}");
    assert_eq!(e["path"], cred.to_str().expect("utf8"), "{e}");
    assert_eq!(e["nhi"], "app", "{e}");
    assert!(e["inode"].as_u64().is_some(), "{e}");
    // Into a fixed-file slot: no fd, judged by name.
    let pid = run(Command::new(&helper)
        .arg(&cred)
        .arg("fixed")
        .stdout(Stdio::null()));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["syscall"], "io_uring_openat", "{e}");
    assert_eq!(e["nhi"], "app", "{e}");
}

#[test]
fn open_by_handle_at_is_seen() {
    if !require_root_bpf() {
        return;
    }
    let (cred, reg) = credential("by-handle");
    let d = Daemon::start(&reg);
    // A file handle made once, then opened with no path at all.
    let code = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         class FH(ctypes.Structure):\n    _fields_ = [('n', ctypes.c_uint), ('t', ctypes.c_int), ('h', ctypes.c_ubyte * 128)]\n\
         fh = FH(); fh.n = 128; mnt = ctypes.c_int()\n\
         assert libc.name_to_handle_at(-100, b'{cred}', ctypes.byref(fh), ctypes.byref(mnt), 0) == 0\n\
         m = os.open('/', os.O_RDONLY)\n\
         fd = libc.open_by_handle_at(m, ctypes.byref(fh), os.O_RDONLY)\n\
         assert fd >= 0, ctypes.get_errno()\n",
        cred = cred.display()
    );
    let pid = run(Command::new(nhiscope_tests::procs::PYTHON)
        .arg("-c")
        .arg(&code));
    let e = d.wait_for(WAIT, |e| e["kind"] == "open" && e["pid"] == pid);
    assert_eq!(e["syscall"], "open_by_handle_at", "{e}");
    assert_eq!(e["path"], cred.to_str().expect("utf8"), "{e}");
    assert_eq!(e["nhi"], "app", "{e}");
}

#[test]
fn the_daemon_names_the_32_bit_door_when_the_kernel_leaves_it_open() {
    if !require_root_bpf() {
        return;
    }
    let (_cred, reg) = credential("ia32");
    let d = Daemon::start(&reg);
    let open = nhiscope::sense::coverage::ia32_syscalls_accepted() == Some(true);
    let said = d
        .output()
        .iter()
        .any(|l| l.contains("not seen: 32-bit system calls"));
    assert_eq!(said, open, "{:?}", d.output());
}
