//! `cargo xtask test`: everything CI checks, in the order a developer wants the answers.
//!
//! The eBPF object and the debug `nhiscope` binary are built first, because the end-to-end tests
//! (crate `nhiscope-tests`) run that binary. `NHISCOPE_REQUIRE_BPF=1` turns a kernel test's
//! "skipping: <why>" into a failure: here, and so in CI, every test must really run.
//! Once the builds are done, the tests, the format checks, clippy (the workspace's and
//! monitor-ebpf's), a short run of every fuzz target and cargo-deny all run even if one fails,
//! so that one run reports every problem.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd, cmd::Cmd, deny, ebpf, fuzz, setup};

/// Seconds each fuzz target runs in CI.
const CI_FUZZ_SECS: u64 = 10;

#[derive(Args, Debug, Default)]
pub struct Options {
    /// What `cargo xtask deny` takes: whether an unreachable advisory database may be reported
    /// as NOT CHECKED instead of failing.
    #[command(flatten)]
    pub deny: deny::Options,
    /// Extra arguments for `cargo test --workspace --no-fail-fast`, after `--`: a test name
    /// filter, or `-- --nocapture` for the test binaries.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    setup::run(&setup::Options::default())?;
    let object = ebpf::build()?;
    let binary = build::build_user(&object, false)?;

    // The same NHISCOPE_BPF_OBJ for every cargo command: monitor-user's build script reruns
    // (and the crate rebuilds) whenever it changes.
    let steps: [(&str, Cmd); 7] = [
        (
            "cargo test",
            cmd::cargo()
                .env("NHISCOPE_BPF_OBJ", &object)
                .env("NHISCOPE_BIN", &binary)
                .env("NHISCOPE_REQUIRE_BPF", "1")
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(&opts.args),
        ),
        (
            "cargo fmt",
            cmd::cargo().args(["fmt", "--all", "--", "--check"]),
        ),
        (
            // monitor-ebpf is its own workspace, out of `cargo fmt --all`'s reach; rustfmt
            // follows its `mod` declarations from the crate root.
            "rustfmt monitor-ebpf",
            Cmd::new("rustfmt")
                .current_dir(&cmd::workspace_root())
                .args(["--edition", "2021", "--check", "monitor-ebpf/src/main.rs"]),
        ),
        (
            // The fuzz crate is its own workspace too (built with sanitizer flags).
            "rustfmt fuzz",
            Cmd::new("rustfmt")
                .current_dir(&cmd::workspace_root())
                .args(["--edition", "2021", "--check"])
                .args(fuzz::SOURCES),
        ),
        (
            "cargo clippy",
            cmd::cargo().env("NHISCOPE_BPF_OBJ", &object).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            // With Debian's toolchain, which builds it (it has its own lints table).
            "clippy monitor-ebpf",
            ebpf::clippy(),
        ),
        (
            // Every fuzz target briefly, from its seeds: a crash fails CI with its input named.
            // The quick build (no ASan, opt-level 1) keeps this step near 4 minutes.
            "cargo xtask fuzz",
            cmd::cargo()
                .args(["xtask", "fuzz", "--quick", "--secs"])
                .arg(CI_FUZZ_SECS.to_string()),
        ),
    ];

    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for (name, step) in steps {
        let step_started = Instant::now();
        match step.run() {
            Ok(()) => passed.push(format!(
                "{name} {:.0}s",
                step_started.elapsed().as_secs_f64()
            )),
            Err(err) => {
                eprintln!("test: {err:#}");
                failed.push(name);
            }
        }
    }
    // In-process: its outcome (were the advisories checked?) goes into the summary.
    let step_started = Instant::now();
    match deny::check(&opts.deny) {
        Ok(outcome) => passed.push(format!(
            "cargo deny ({}) {:.0}s",
            outcome.summary(),
            step_started.elapsed().as_secs_f64()
        )),
        Err(err) => {
            eprintln!("test: {err:#}");
            failed.push("cargo deny");
        }
    }
    let total = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        eprintln!(
            "test: all passed ({}; total {total:.0}s)",
            passed.join(", ")
        );
        Ok(())
    } else {
        let passed = if passed.is_empty() {
            "none".to_owned()
        } else {
            passed.join(", ")
        };
        bail!(
            "test: FAILED: {} (passed: {passed}; total {total:.0}s)",
            failed.join(", ")
        )
    }
}
