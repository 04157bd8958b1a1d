//! A current ClickHouse engine for tests: PyPI's `chdb-core` (ClickHouse 26.x in-process),
//! installed into a virtualenv under `target/chdb/` on first use. The 181 MB wheel is kept in
//! `target/chdb/wheels`, so a venv is rebuilt without the network; `pip` reaches PyPI only when
//! that cache is empty. Installs are serialized across test processes with a lock file.
//!
//! chdb-core's Python package declares pandas and pyarrow as dependencies; the SQL engine needs
//! neither, so it is installed with `--no-deps`.
//!
//! [`Chdb::get`] returns `None` (after `skipping: <why>`) when Python or the package cannot be
//! had, unless `NHISCOPE_REQUIRE_CHDB=1` or `NHISCOPE_REQUIRE_BPF=1` (CI) makes it a failure.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// A runnable chdb: the venv's python.
pub struct Chdb {
    python: PathBuf,
}

fn required() -> bool {
    ["NHISCOPE_REQUIRE_CHDB", "NHISCOPE_REQUIRE_BPF"]
        .iter()
        .any(|v| env::var_os(v).is_some_and(|v| v == "1"))
}

/// `target/` of the workspace (or `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("target"),
    }
}

/// The runner: reads a JSON list of SQL statements, runs them in order in one session (a
/// fresh directory), prints a JSON list of their outputs, or `{"error": ..., "index": i}`.
const RUNNER: &str = r#"
import json, sys
from chdb import session
stmts = json.load(open(sys.argv[1]))
s = session.Session(sys.argv[2])
out = []
for i, sql in enumerate(stmts):
    try:
        r = s.query(sql, "JSONEachRow")
        out.append(r.bytes().decode() if hasattr(r, "bytes") else str(r))
    except Exception as e:
        print(json.dumps({"error": str(e), "index": i, "sql": sql}))
        sys.exit(0)
print(json.dumps(out))
"#;

impl Chdb {
    /// The chdb venv, installing it when missing.
    #[track_caller]
    pub fn get() -> Option<Chdb> {
        match ensure() {
            Ok(python) => Some(Chdb { python }),
            Err(why) if required() => panic!("this test needs chdb-core: {why}"),
            Err(why) => {
                eprintln!("skipping: {why}");
                None
            }
        }
    }

    /// Runs `statements` in one fresh session under `dir`; returns each one's output rows
    /// (`JSONEachRow`, parsed). Panics with the failing statement and ClickHouse's message.
    #[track_caller]
    pub fn run(&self, dir: &Path, statements: &[String]) -> Vec<Vec<Value>> {
        match self.try_run(dir, statements) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Chdb::run`], but a failing statement is an `Err` with its index and message.
    pub fn try_run(&self, dir: &Path, statements: &[String]) -> Result<Vec<Vec<Value>>, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let plan = dir.join("statements.json");
        let script = dir.join("runner.py");
        let json = serde_json::to_string(statements).map_err(|e| e.to_string())?;
        fs::write(&plan, json).map_err(|e| format!("{}: {e}", plan.display()))?;
        fs::write(&script, RUNNER).map_err(|e| format!("{}: {e}", script.display()))?;
        let out = Command::new(&self.python)
            .arg(&script)
            .arg(&plan)
            .arg(dir.join("session"))
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(last).map_err(|e| {
            format!(
                "chdb runner failed ({e}; {}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if let Some(err) = v.get("error") {
            return Err(format!(
                "chdb rejected statement {}: {}\n--- statement:\n{}",
                v["index"],
                err,
                v["sql"].as_str().unwrap_or_default()
            ));
        }
        let outputs = v.as_array().cloned().unwrap_or_default();
        Ok(outputs
            .iter()
            .map(|o| {
                o.as_str()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.to_owned())))
                    .collect()
            })
            .collect())
    }
}

/// Makes `target/chdb/venv` with chdb importable; returns its python.
fn ensure() -> Result<PathBuf, String> {
    let root = target_dir().join("chdb");
    let venv = root.join("venv");
    let python = venv.join("bin").join("python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import chdb"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok(&python) {
        return Ok(python);
    }
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let _lock = FileLock::new(&root.join("install.lock"))?;
    if ok(&python) {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    let wheels = root.join("wheels");
    let cached = fs::read_dir(&wheels)
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("chdb_core"))
        })
        .unwrap_or(false);
    if !cached {
        eprintln!(
            "chdb: downloading chdb-core (a 181 MB wheel) into {}",
            wheels.display()
        );
        run(Command::new(venv.join("bin").join("pip"))
            .args(["download", "--quiet", "--no-deps", "-d"])
            .arg(&wheels)
            .arg("chdb-core"))?;
    }
    run(Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--find-links",
        ])
        .arg(&wheels)
        .arg("chdb-core"))?;
    if ok(&python) {
        Ok(python)
    } else {
        Err(format!(
            "chdb-core installed in {} but `import chdb` fails",
            venv.display()
        ))
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An exclusive `flock` held until dropped.
struct FileLock {
    _held: fs::File,
}

impl FileLock {
    fn new(path: &Path) -> Result<FileLock, String> {
        use std::os::fd::AsRawFd as _;
        let f = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on an fd we own; it stays open as long as the lock is held.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(FileLock { _held: f })
    }
}
