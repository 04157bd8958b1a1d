//! Running the real processes that act out a scenario, and the facts tests compare with.

use std::{os::unix::process::CommandExt, process::Command};

/// Debian's interpreter: a real executable (a version manager's `python3` may be a shell shim).
pub const PYTHON: &str = "/usr/bin/python3";

/// The canonical path of a command as the shell finds it (`cat` -> `/usr/bin/cat`).
pub fn canon(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::canonicalize(&p)
        .unwrap_or_else(|e| panic!("{cmd} not found ({p}): {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Run `cmd` to completion in a session of its own, without a controlling terminal (so the
/// test does not depend on how the test runner itself was started), and return its pid.
#[track_caller]
pub fn run(cmd: &mut Command) -> u32 {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let st = child.wait().expect("wait");
    assert!(st.code().is_some(), "{cmd:?} was killed");
    pid
}

/// Python code that connects to each `(address, port)` in turn (TCP), closing each at once.
pub fn connect_code(targets: &[(String, u16)]) -> String {
    let mut code = String::from("import socket\n");
    for (host, port) in targets {
        code += &format!("s=socket.create_connection(('{host}',{port}))\ns.close()\n");
    }
    code
}
