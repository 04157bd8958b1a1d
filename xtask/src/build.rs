//! `cargo xtask build`: the eBPF object, then the `nhiscope` binary that embeds it.
//!
//! `monitor-user/build.rs` copies the object named by `NHISCOPE_BPF_OBJ` into the binary; it is
//! always set here, so a stale or missing object can never slip in unnoticed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{cmd, ebpf};

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Optimised build (what `run` and `bench` use). The default debug build is what the
    /// end-to-end tests run, because it compiles faster and its assertions are on.
    #[arg(long)]
    pub release: bool,
}

/// Builds everything and returns the path of the `nhiscope` binary.
pub fn run(opts: &Options) -> Result<PathBuf> {
    let object = ebpf::build()?;
    build_user(&object, opts.release)
}

/// `cargo build -p monitor-user` with the object at `object` embedded.
pub fn build_user(object: &std::path::Path, release: bool) -> Result<PathBuf> {
    let mut build =
        cmd::cargo()
            .env("NHISCOPE_BPF_OBJ", object)
            .args(["build", "-p", "monitor-user"]);
    if release {
        build = build.arg("--release");
    }
    build.run()?;
    let binary = binary(release);
    eprintln!("build: {}", binary.display());
    Ok(binary)
}

/// Where cargo puts the `nhiscope` binary for that profile.
pub fn binary(release: bool) -> PathBuf {
    cmd::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("nhiscope")
}
