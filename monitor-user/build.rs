//! Embeds the eBPF object into the `nhiscope` binary.
//!
//! The object is built by `cargo xtask build-ebpf` with another toolchain (see README), so this
//! script only picks it up: from `NHISCOPE_BPF_OBJ` when set (xtask always sets it), else from
//! the default place `target/bpf/bpfel-unknown-none/release/monitor-ebpf`. It lands in
//! `$OUT_DIR/nhiscope.bpf.o` and the crate is built with `cfg(nhiscope_bpf)`. Without an object
//! (a machine without the BPF toolchain) an empty file is written and the cfg is not set, so
//! that the domain code and its tests still build and run.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

type Result<T> = std::result::Result<T, String>;

fn main() -> Result<()> {
    println!("cargo:rustc-check-cfg=cfg(nhiscope_bpf)");
    println!("cargo:rerun-if-env-changed=NHISCOPE_BPF_OBJ");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let workspace_root = manifest_dir.parent().unwrap_or(&manifest_dir);
    let default = workspace_root.join("target/bpf/bpfel-unknown-none/release/monitor-ebpf");
    watch(&default, &workspace_root.join("target/bpf"));

    let object = match env::var_os("NHISCOPE_BPF_OBJ").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "NHISCOPE_BPF_OBJ={} does not exist: build it with `cargo xtask build-ebpf`",
                    path.display()
                ));
            }
            println!("cargo:rerun-if-changed={}", path.display());
            Some(path)
        }
        None => default.is_file().then(|| default.clone()),
    };

    let out =
        PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?).join("nhiscope.bpf.o");
    let bytes = match &object {
        Some(path) => fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
        None => {
            println!(
                "cargo:warning=no eBPF object at {}: building nhiscope without kernel probes \
                 (`cargo xtask build` builds both)",
                default.display()
            );
            Vec::new()
        }
    };
    // Rewriting identical bytes would only bump the mtime; skip it.
    if fs::read(&out).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(&out, &bytes).map_err(|e| format!("writing {}: {e}", out.display()))?;
    }
    if object.is_some() {
        println!("cargo:rustc-cfg=nhiscope_bpf");
    }
    Ok(())
}

/// Reruns this script when the default object changes or appears.
///
/// cargo treats a missing `rerun-if-changed` path as changed, which would rerun this script and
/// rebuild the crate on every build; so while the object is missing, watch the nearest
/// directory on its way that exists (`bpf_root` is created if need be: it is only watched).
fn watch(object: &Path, bpf_root: &Path) {
    if object.exists() {
        println!("cargo:rerun-if-changed={}", object.display());
        return;
    }
    // Best effort: without it, a later `cargo xtask build-ebpf` is noticed through
    // NHISCOPE_BPF_OBJ, which xtask sets, instead.
    let _ = fs::create_dir_all(bpf_root);
    let existing = object
        .ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(bpf_root))
        .find(|dir| dir.is_dir());
    if let Some(dir) = existing {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
}
