//! The little the benchmark needs from `bpftool`: program sizes, other programs on `openat`, and
//! the daemon's loss counters.

use std::{collections::BTreeSet, process::Command};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::sys;

fn run_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .context("cannot run bpftool: install it with `cargo xtask setup`")?;
    if !out.status.success() {
        bail!(
            "`bpftool {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`bpftool {}` printed no JSON", args.join(" ")))
}

/// Every loaded program, as `bpftool prog show -j` lists them.
pub fn progs() -> Result<Vec<Value>> {
    match run_json(&["prog", "show", "-j"])? {
        Value::Array(a) => Ok(a),
        _ => bail!("`bpftool prog show -j` printed no list"),
    }
}

/// (bytes_xlated, bytes_jited) of program `id`.
pub fn sizes(all: &[Value], id: u32) -> (Option<u64>, Option<u64>) {
    all.iter()
        .find(|p| p["id"].as_u64() == Some(u64::from(id)))
        .map_or((None, None), |p| {
            (p["bytes_xlated"].as_u64(), p["bytes_jited"].as_u64())
        })
}

/// Loaded programs whose (truncated) name is that of an `openat` hook, other than `ours`:
/// another daemon or tracer that makes the loop slower in every run, ours or not.
pub fn foreign_openat_progs(all: &[Value], ours: &BTreeSet<u32>) -> Vec<String> {
    all.iter()
        .filter(|p| {
            let name = p["name"].as_str().unwrap_or("");
            name.starts_with("sys_enter_open") || name.starts_with("sys_exit_openat")
        })
        .filter_map(|p| {
            let id = p["id"].as_u64()? as u32;
            (!ours.contains(&id))
                .then(|| format!("{} (id {id})", p["name"].as_str().unwrap_or("?")))
        })
        .collect()
}

/// A u64 from bpftool's map dump: a number (with BTF) or little-endian hex bytes (without).
fn dumped_u64(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let bytes = v.as_array()?;
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate().take(8) {
        let b = u64::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok()?;
        n |= b << (8 * i);
    }
    Some(n)
}

/// The total of the `LOSSES` per-CPU counters of the daemon `pid` (records the kernel could not
/// deliver), or None when they cannot be read.
pub fn losses(pid: u32) -> Option<u64> {
    let ids: BTreeSet<u32> = sys::map_ids_of(pid).into_iter().collect();
    let maps = run_json(&["map", "show", "-j"]).ok()?;
    let id = maps.as_array()?.iter().find_map(|m| {
        let id = m["id"].as_u64()? as u32;
        (ids.contains(&id) && m["name"].as_str() == Some("LOSSES")).then_some(id)
    })?;
    let dump = run_json(&["map", "dump", "id", &id.to_string(), "-j"]).ok()?;
    let mut total = 0u64;
    for entry in dump.as_array()? {
        // With BTF, bpftool nests the entry under "formatted".
        let entry = entry.get("formatted").unwrap_or(entry);
        for v in entry["values"].as_array()? {
            total += dumped_u64(&v["value"])?;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_dump_formats() {
        assert_eq!(dumped_u64(&serde_json::json!(42)), Some(42));
        let hex =
            serde_json::json!(["0x01", "0x01", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"]);
        assert_eq!(dumped_u64(&hex), Some(257));
    }
}
