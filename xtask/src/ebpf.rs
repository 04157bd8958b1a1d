//! `cargo xtask build-ebpf`: build `monitor-ebpf` for `bpfel-unknown-none` with Debian's
//! toolchain (and lint it with Debian's clippy, for `cargo xtask test`).
//!
//! rustup's toolchains here have no `rust-src`, which `-Z build-std=core` needs; Debian's
//! rustc-web 1.96 has it (rust-web-src). So this build runs Debian's `/usr/bin/cargo` with
//! `RUSTC=/usr/bin/rustc` and `RUSTC_BOOTSTRAP=1`, and must not see anything that the rustup
//! cargo running this xtask put in the environment.

use std::{env, ffi::OsString, path::PathBuf, time::Instant};

use anyhow::{bail, Result};

use crate::cmd::{self, Cmd};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// Builds the eBPF object (release: the verifier needs optimised code) and returns its path.
pub fn build() -> Result<PathBuf> {
    let started = Instant::now();
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !std::path::Path::new(tool).is_file() {
            bail!("build-ebpf: {tool} (Debian's rustc-web) is missing: run `cargo xtask setup`");
        }
    }
    let linker = cmd::cargo_bin_dir().join("bpf-linker");
    let linker_on_path = env::var_os("PATH")
        .is_some_and(|p| env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()));
    if !linker.is_file() && !linker_on_path {
        bail!("build-ebpf: bpf-linker is not installed: run `cargo xtask setup`");
    }

    debian_cargo("build").run()?;

    let object = cmd::bpf_object();
    strip_debug(&object)?;
    let size = std::fs::metadata(&object).map(|m| m.len()).map_err(|e| {
        anyhow::anyhow!(
            "build-ebpf: the build did not produce {}: {e}",
            object.display()
        )
    })?;
    eprintln!(
        "build-ebpf: {} ({} KiB, {:.1}s)",
        object.display(),
        size.div_ceil(1024),
        started.elapsed().as_secs_f64()
    );
    Ok(object)
}

/// LLVM's objcopy, of the LLVM that links the object.
const OBJCOPY: &str = "/usr/bin/llvm-objcopy-22";

/// Drops the object's DWARF (`.debug_*`), which bpf-linker needs to write the BTF and the
/// daemon never reads: the daemon embeds the object, so its size is resident memory (2.3 MiB
/// with it, 0.5 MiB without). The BTF sections stay. Done only on an object that still has
/// them, so that an unchanged object keeps its time and the daemon is not rebuilt for nothing.
fn strip_debug(object: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(object)
        .map_err(|e| anyhow::anyhow!("build-ebpf: cannot read {}: {e}", object.display()))?;
    if !bytes.windows(11).any(|w| w == b".debug_info") {
        return Ok(());
    }
    if !std::path::Path::new(OBJCOPY).is_file() {
        bail!("build-ebpf: {OBJCOPY} (Debian's llvm-22) is missing: run `cargo xtask setup`");
    }
    // Into a new file, then renamed over the object: cargo's hard link to it in deps/ keeps the
    // whole object, and the daemon's build sees one change.
    let stripped = object.with_extension("stripped");
    Cmd::new(OBJCOPY)
        .arg("--strip-debug")
        .arg(object)
        .arg(&stripped)
        .run()?;
    std::fs::rename(&stripped, object)
        .map_err(|e| anyhow::anyhow!("build-ebpf: cannot replace {}: {e}", object.display()))
}

/// Clippy over `monitor-ebpf` (with `-D warnings`), as it is built: Debian's clippy 1.96
/// (rust-web-clippy, installed by `cargo xtask setup`), for `bpfel-unknown-none`. Its lints are
/// the workspace's, copied into its own manifest (it is a workspace of its own).
pub fn clippy() -> Cmd {
    debian_cargo("clippy").args(["--", "-D", "warnings"])
}

/// Debian's cargo running `subcommand` (build, clippy) on `monitor-ebpf` for
/// `bpfel-unknown-none`, release, with nothing of the calling cargo's environment.
fn debian_cargo(subcommand: &str) -> Cmd {
    let crate_dir = cmd::workspace_root().join("monitor-ebpf");
    let mut c = Cmd::new(DEBIAN_CARGO).current_dir(&crate_dir);
    for key in leaking_vars(env::vars_os().map(|(k, _)| k)) {
        c = c.env_remove(key);
    }
    c.env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", cmd::bpf_target_dir())
        .env_shown_as("PATH", child_path(), "/usr/bin:~/.cargo/bin:$PATH")
        // BTF in the object: the kernel wants function info for a `bpf_loop` callback
        // (monitor-ebpf/src/probes/sockets.rs), and bpf-linker writes BTF only when asked.
        .env("RUSTFLAGS", "-C link-arg=--btf")
        .args([subcommand, "--release", "-Z", "build-std=core"])
        .args(["--target", "bpfel-unknown-none"])
}

/// Variables that must not reach Debian's cargo: those cargo sets for the xtask it runs
/// (`CARGO`, `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...), those rustup's proxy sets
/// (`RUSTUP_TOOLCHAIN` would make the `rustc` shims pick rustup's), build settings meant for the
/// userspace build (`RUSTFLAGS`, `CARGO_BUILD_*`, `CARGO_TARGET_DIR`, wrappers), and
/// `LD_LIBRARY_PATH`, which `cargo run` points at rustup's sysroot and our target directory.
/// Kept: where cargo keeps its home and how it reaches the network.
fn leaking_vars(keys: impl Iterator<Item = OsString>) -> Vec<OsString> {
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const DROP: &[&str] = &[
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_BOOTSTRAP",
        "RUSTUP_TOOLCHAIN",
        "RUST_RECURSION_COUNT",
        "LD_LIBRARY_PATH",
    ];
    keys.filter(|key| {
        let key = key.to_string_lossy();
        let cargo_var = (key.starts_with("CARGO") || key.starts_with("__CARGO"))
            && !KEEP_PREFIXES.iter().any(|p| key.starts_with(p));
        cargo_var || DROP.contains(&key.as_ref())
    })
    .collect()
}

/// `/usr/bin` first, so that any `cargo` or `rustc` a build script runs is Debian's; then
/// `~/.cargo/bin`, where rustc finds `bpf-linker` (the linker named by the bpfel target).
fn child_path() -> OsString {
    let first = [PathBuf::from("/usr/bin"), cmd::cargo_bin_dir()];
    let rest = env::var_os("PATH").unwrap_or_default();
    let rest = env::split_paths(&rest).filter(|d| !first.contains(d));
    let dirs: Vec<PathBuf> = first.iter().cloned().chain(rest).collect();
    env::join_paths(dirs).unwrap_or_else(|_| "/usr/bin:/bin".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_what_cargo_and_rustup_leak_and_keeps_network_settings() {
        let keys = [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
            "__CARGO_FIX_PLZ",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
            "LD_LIBRARY_PATH",
            "CARGO_HOME",
            "CARGO_HTTP_PROXY",
            "CARGO_NET_OFFLINE",
            "HOME",
            "PATH",
            "RUSTUP_HOME",
        ];
        let dropped = leaking_vars(keys.iter().map(OsString::from));
        let dropped: Vec<_> = dropped.iter().map(|k| k.to_string_lossy()).collect();
        assert_eq!(
            dropped,
            [
                "CARGO",
                "CARGO_MANIFEST_DIR",
                "CARGO_PKG_NAME",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
                "CARGO_ENCODED_RUSTFLAGS",
                "__CARGO_FIX_PLZ",
                "RUSTUP_TOOLCHAIN",
                "RUSTFLAGS",
                "LD_LIBRARY_PATH",
            ]
        );
    }
}
