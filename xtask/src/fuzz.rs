//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` and runs each for a set time.
//!
//! cargo-fuzz is not needed (installing it would cost CI minutes): the build passes the flags
//! cargo-fuzz passes (libFuzzer's coverage instrumentation, `--cfg fuzzing`, AddressSanitizer,
//! debug assertions), with `RUSTC_BOOTSTRAP=1` for the `-Z` ones on the stable toolchain, for
//! the host triple given explicitly so that build scripts and proc macros are built plainly. The
//! layout is cargo-fuzz's, so `cargo fuzz run registry` works where cargo-fuzz is installed.
//!
//! Each target starts from its committed seeds (`fuzz/seeds/TARGET`, read only) and the corpus
//! earlier runs grew (`fuzz/corpus/TARGET`, where libFuzzer writes). A crashing input lands in
//! `fuzz/artifacts/TARGET/`; the run goes on with the other targets, then fails naming each
//! crash and how to replay it. libFuzzer's own output goes to `<target dir>/fuzz/logs/TARGET.log`
//! (its tail is printed on a crash), so that a CI log stays readable.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{cmd, cmd::Cmd};

/// The targets, in the order they run (their `[[bin]]` names in fuzz/Cargo.toml).
pub const TARGETS: [&str; 7] = [
    "registry",
    "store_config",
    "daemon_config",
    "dns",
    "decode",
    "live_protocol",
    "wire",
];

/// The fuzz crate's sources, for `rustfmt --check` (it is outside the main workspace, so
/// `cargo fmt --all` does not see it); rustfmt follows `mod` from `lib.rs`.
pub const SOURCES: &[&str] = &[
    "fuzz/src/lib.rs",
    "fuzz/examples/seeds.rs",
    "fuzz/fuzz_targets/registry.rs",
    "fuzz/fuzz_targets/store_config.rs",
    "fuzz/fuzz_targets/daemon_config.rs",
    "fuzz/fuzz_targets/dns.rs",
    "fuzz/fuzz_targets/decode.rs",
    "fuzz/fuzz_targets/live_protocol.rs",
    "fuzz/fuzz_targets/wire.rs",
];

/// The host triple: given to cargo so that RUSTFLAGS reach the target code only.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The flags cargo-fuzz 0.13 passes for `cargo fuzz build` (less `-Ccodegen-units=1`, which
/// only makes the build slower here).
const INSTRUMENT: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

#[derive(Args, Debug)]
pub struct Options {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub secs: u64,
    /// Build without AddressSanitizer and at opt-level 1, in about half the time (what CI
    /// runs). The parsers are safe Rust but for the record decoder's one `read_unaligned`,
    /// which ASan watches; panics and failed checks are found either way.
    #[arg(long)]
    pub quick: bool,
    /// Targets to run (all when none is given).
    #[arg(value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

/// What one target's run came to.
struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    secs: f64,
    crash: Option<Crash>,
}

struct Crash {
    /// The input libFuzzer wrote, when it said where.
    input: Option<PathBuf>,
    log: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let targets: Vec<&'static str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS
            .into_iter()
            .filter(|t| opts.targets.iter().any(|o| o == t))
            .collect()
    };
    let started = Instant::now();
    let bin_dir = build(opts.quick, &targets)?;
    let build_secs = started.elapsed().as_secs_f64();

    let fuzz_dir = cmd::workspace_root().join("fuzz");
    let log_dir = fuzz_target_dir().join("logs");
    fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(fuzz_one(target, &bin_dir, &fuzz_dir, &log_dir, opts.secs)?);
    }

    eprintln!("fuzz: build {build_secs:.0}s");
    for o in &outcomes {
        let runs = o
            .runs
            .map_or_else(|| "? runs".to_owned(), |n| format!("{n} runs"));
        let verdict = match &o.crash {
            None => "no crash".to_owned(),
            Some(c) => match &c.input {
                Some(input) => format!("CRASH, input {}", input.display()),
                None => format!("CRASH, see {}", c.log.display()),
            },
        };
        eprintln!("fuzz: {:<14} {runs} in {:.0}s: {verdict}", o.target, o.secs);
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if crashed.is_empty() {
        eprintln!(
            "fuzz: no crash (total {:.0}s)",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    for o in &crashed {
        if let Some(Crash {
            input: Some(input), ..
        }) = &o.crash
        {
            eprintln!(
                "fuzz: replay {}: {} {}",
                o.target,
                bin_dir.join(o.target).display(),
                input.display()
            );
        }
    }
    bail!(
        "fuzz: {} crashed: make each input a regression test in the crate that owns the parser",
        crashed
            .iter()
            .map(|o| o.target)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Where the instrumented builds and the logs go: apart from the ordinary builds, whose flags
/// differ (sharing a directory would rebuild everything at each switch).
fn fuzz_target_dir() -> PathBuf {
    cmd::target_dir().join("fuzz")
}

/// Builds `targets` and returns the directory of their binaries.
fn build(quick: bool, targets: &[&str]) -> Result<PathBuf> {
    let mut flags: Vec<&str> = INSTRUMENT.to_vec();
    if !quick {
        flags.push("-Zsanitizer=address");
    }
    // One directory per variant, so that switching does not rebuild either.
    let target_dir = fuzz_target_dir().join(if quick { "quick" } else { "asan" });
    let manifest = cmd::workspace_root().join("fuzz").join("Cargo.toml");
    let opt_level = if quick { "1" } else { "3" };
    let mut build = cmd::cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", flags.join(" "))
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", opt_level)
        .env("CARGO_TARGET_DIR", &target_dir)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--release", "--target", TRIPLE]);
    for t in targets {
        build = build.args(["--bin", t]);
    }
    build.run()?;
    Ok(target_dir.join(TRIPLE).join("release"))
}

fn fuzz_one(
    target: &'static str,
    bin_dir: &Path,
    fuzz_dir: &Path,
    log_dir: &Path,
    secs: u64,
) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = log_dir.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let binary = bin_dir.join(target);
    let args = [
        corpus.display().to_string(),
        seeds.display().to_string(),
        format!("-max_total_time={secs}"),
        // A hang is a bug too: one input may take at most this long.
        "-timeout=10".to_owned(),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".to_owned(),
    ];
    let shown = Cmd::new(&binary).args(&args).display();
    eprintln!("+ {shown} 2>{}", log.display());
    let started = Instant::now();
    let status = Command::new(&binary)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(log_file)
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    let secs = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let runs = final_runs(&text);
    let crash = (!status.success()).then(|| {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "fuzz: {target} crashed ({status}); end of {}:",
            log.display()
        );
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        Crash {
            input: crash_input(&text),
            log: log.clone(),
        }
    });
    Ok(Outcome {
        target,
        runs,
        secs,
        crash,
    })
}

/// How many inputs libFuzzer ran (`stat::number_of_executed_units: N`, or the `Done N runs`
/// line of a run that ended on time).
fn final_runs(log: &str) -> Option<u64> {
    let stat = log.lines().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    stat.or_else(|| {
        log.lines().rev().find_map(|l| {
            let rest = l.strip_prefix("Done ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
    })
}

/// The crashing input libFuzzer wrote (`Test unit written to PATH`).
fn crash_input(log: &str) -> Option<PathBuf> {
    log.lines().rev().find_map(|l| {
        l.split_once("Test unit written to ")
            .map(|(_, path)| PathBuf::from(path.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "#1024\tpulse  cov: 10\nDone 123456 runs in 15 second(s)\n\
                        stat::number_of_executed_units: 123457\nstat::average_exec_per_sec:     8230\n";
    const CRASHED: &str = "thread panicked at src/x.rs:1:1\n==1== ERROR: libFuzzer: deadly signal\n\
                           MS: 1 ChangeBit-; base unit: 0\n\
                           artifact_prefix='/w/fuzz/artifacts/dns/'; Test unit written to /w/fuzz/artifacts/dns/crash-ab12\n\
                           Base64: AAE=\nstat::number_of_executed_units: 77\n";

    #[test]
    fn reads_the_runs_and_the_crashing_input_from_libfuzzer() {
        assert_eq!(final_runs(DONE), Some(123_457));
        assert_eq!(final_runs("Done 9 runs in 1 second(s)\n"), Some(9));
        assert_eq!(final_runs("INFO: Seed: 1\n"), None);
        assert_eq!(crash_input(DONE), None);
        assert_eq!(
            crash_input(CRASHED),
            Some(PathBuf::from("/w/fuzz/artifacts/dns/crash-ab12"))
        );
        assert_eq!(final_runs(CRASHED), Some(77));
    }

    #[test]
    fn every_target_has_a_bin_and_seeds() {
        let fuzz = cmd::workspace_root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} is not a [[bin]] of fuzz/Cargo.toml"
            );
            let source = format!("fuzz/fuzz_targets/{t}.rs");
            assert!(
                SOURCES.contains(&source.as_str()),
                "{source} is not format-checked"
            );
            let seeds = fs::read_dir(fuzz.join("seeds").join(t)).map(Iterator::count);
            assert!(seeds.is_ok_and(|n| n > 0), "{t} has no seeds");
        }
    }
}
