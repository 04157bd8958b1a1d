//! `cargo xtask run`: the main job. Installs what is missing, builds in release, then replaces
//! itself with the daemon watching `examples/registry.yaml` and printing events as JSON lines.

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd, cmd::Cmd, setup};

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Extra arguments for `nhiscope daemon`, after `--`.
    #[arg(last = true, value_name = "DAEMON_ARGS")]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    setup::run(&setup::Options::default())?;
    let binary = build::run(&build::Options { release: true })?;
    let registry = cmd::workspace_root().join("examples").join("registry.yaml");
    if !registry.is_file() {
        bail!("run: {} is missing", registry.display());
    }
    // exec, not spawn: Ctrl-C and SIGTERM then reach the daemon itself, which flushes and exits.
    Err(Cmd::new(&binary)
        .arg("daemon")
        .arg("--registry")
        .arg(&registry)
        .args(["--json", "-"])
        .args(&opts.args)
        .exec())
}
