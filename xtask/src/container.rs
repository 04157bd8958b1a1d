//! `cargo xtask container`: the daemon's image, from deploy/container/Containerfile.
//!
//! Builds the release binary, then runs deploy/container/build-image.sh, which makes a Debian 12
//! root filesystem with debootstrap (kept in target/container/rootfs), imports it into podman as
//! the base image and builds the nhiscope image on it: no image is pulled from any registry.
//! tests/tests/kubernetes.rs builds the same way and runs the daemon in the image with the
//! DaemonSet's capabilities.

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd, cmd::Cmd, setup};

#[derive(Args, Debug)]
pub struct Options {
    /// The image's name.
    #[arg(long, default_value = "localhost/nhiscope:dev")]
    pub tag: String,
}

pub fn run(opts: &Options) -> Result<()> {
    if !cmd::is_root() {
        bail!("container: podman and debootstrap need root here: run it as root");
    }
    setup::run(&setup::Options::default())?;
    let binary = build::run(&build::Options { release: true })?;
    let root = cmd::workspace_root();
    Cmd::new(root.join("deploy/container/build-image.sh"))
        .arg(&binary)
        .arg(&opts.tag)
        .env(
            "NHISCOPE_ROOTFS",
            cmd::target_dir().join("container/rootfs"),
        )
        .current_dir(&root)
        .run()?;
    eprintln!(
        "container: {} built; see deploy/kubernetes/daemonset.yaml to run it",
        opts.tag
    );
    Ok(())
}
