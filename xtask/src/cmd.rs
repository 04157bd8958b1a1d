//! Running child processes the way a person would in a shell: print the command line first
//! (`+ cargo build ...`), then fail with that command line in the error when it fails.
//!
//! Also where the paths of the workspace live, so that every task agrees on them.

use std::{
    env,
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// A command and the way to show it: only what a reader needs to repeat it by hand (the
/// variables it sets, the directory it runs in), not the whole inherited environment.
pub struct Cmd {
    inner: Command,
    shown_program: Option<String>,
    shown_env: Vec<String>,
    shown_dir: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            inner: Command::new(program),
            shown_program: None,
            shown_env: Vec::new(),
            shown_dir: None,
        }
    }

    /// Shows the program as `shown` (`cargo` rather than the toolchain's full path).
    pub fn shown_as(mut self, shown: &str) -> Self {
        self.shown_program = Some(shown.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets a variable for the child and shows it on the printed command line.
    pub fn env(self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let shown = value.as_ref().to_string_lossy().into_owned();
        self.env_shown_as(key, value, &shown)
    }

    /// Sets a variable for the child, printed as `key=shown` (for values too long to read).
    pub fn env_shown_as(mut self, key: &str, value: impl AsRef<OsStr>, shown: &str) -> Self {
        self.inner.env(key, value);
        self.shown_env.push(format!("{key}={}", quote(shown)));
        self
    }

    /// Removes an inherited variable (not printed: it is housekeeping, not part of the recipe).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.inner.env_remove(key);
        self
    }

    /// Runs it in `dir`; printed as `cd dir &&` unless `dir` is the workspace root, where
    /// every printed command runs unless it says otherwise.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.inner.current_dir(dir);
        self.shown_dir = (dir != workspace_root()).then(|| dir.to_path_buf());
        self
    }

    /// The command line as printed before running it.
    pub fn display(&self) -> String {
        let mut words = Vec::new();
        if let Some(dir) = &self.shown_dir {
            words.push(format!("cd {} &&", quote(&dir.to_string_lossy())));
        }
        words.extend(self.shown_env.iter().cloned());
        let program = self.inner.get_program().to_string_lossy();
        words.push(quote(self.shown_program.as_deref().unwrap_or(&program)));
        words.extend(self.inner.get_args().map(|a| quote(&a.to_string_lossy())));
        words.join(" ")
    }

    /// Prints the command line, runs it with inherited stdio, and fails unless it exits 0.
    pub fn run(mut self) -> Result<()> {
        let line = self.display();
        eprintln!("+ {line}");
        let status = self
            .inner
            .status()
            .with_context(|| format!("could not start `{line}`"))?;
        if !status.success() {
            bail!("`{line}` failed ({status})");
        }
        Ok(())
    }

    /// Runs it silently and returns its stdout when it exits 0; `None` when it cannot start or
    /// fails. For probes such as `bpf-linker --version`, whose failure is an answer.
    pub fn probe(mut self) -> Option<String> {
        let out = self
            .inner
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Prints the command line and replaces this process with it; returns only on failure.
    pub fn exec(mut self) -> anyhow::Error {
        let line = self.display();
        eprintln!("+ {line}");
        let err = self.inner.exec();
        anyhow::Error::new(err).context(format!("could not exec `{line}`"))
    }
}

/// Quotes a word for a POSIX shell when it needs it, so that printed lines can be pasted.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The cargo that runs this xtask (rustup's stable): used for every userspace build so that
/// they share one toolchain and one target directory.
pub fn cargo() -> Cmd {
    Cmd::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .shown_as("cargo")
        .current_dir(&workspace_root())
}

/// The workspace root. The xtask is always built from its place in the tree, so the path known
/// at compile time is the right one.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The userspace target directory: `CARGO_TARGET_DIR` when the user set one, else `target/`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().unwrap_or_default().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where the eBPF crate's own target directory lives (a subdirectory of the userspace one, so
/// that `target/` still holds everything and one `rm -r target` cleans both).
pub fn bpf_target_dir() -> PathBuf {
    target_dir().join("bpf")
}

/// The eBPF object that `build-ebpf` produces and the daemon embeds.
pub fn bpf_object() -> PathBuf {
    bpf_target_dir()
        .join("bpfel-unknown-none")
        .join("release")
        .join("monitor-ebpf")
}

/// `~/.cargo/bin` (or `$CARGO_HOME/bin`): where rustup's tools and `bpf-linker` live.
pub fn cargo_bin_dir() -> PathBuf {
    match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("bin"),
        _ => PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cargo")
            .join("bin"),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_a_shell_would_split() {
        assert_eq!(quote("build"), "build");
        assert_eq!(quote("--features=llvm-22"), "--features=llvm-22");
        assert_eq!(quote("${Status}"), "'${Status}'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn shows_env_dir_and_args() {
        let cmd = Cmd::new("/x/bin/cargo")
            .shown_as("cargo")
            .current_dir(Path::new("/w"))
            .env("A", "1")
            .env_remove("B")
            .args(["build", "-p", "x y"]);
        assert_eq!(cmd.display(), "cd /w && A=1 cargo build -p 'x y'");
        let at_root = Cmd::new("ls").current_dir(&workspace_root());
        assert_eq!(at_root.display(), "ls");
    }
}
