//! nhiscope's developer tasks, run as `cargo xtask <task>` from anywhere in the workspace.
//!
//! One module per task, each with its clap `Options` and a `run` function; `cmd` holds the
//! shared plumbing (printing and running commands, the workspace's paths). To add a task, add a
//! module and one variant to `Task`.

mod bench;
mod build;
mod clickhouse;
mod cmd;
mod container;
mod deny;
mod ebpf;
mod fuzz;
mod package;
mod run;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test nhiscope."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install what is missing on a Debian 12 machine (apt packages, bpf-linker) and mount
    /// tracefs; only checks, in well under a second, when everything is there. Needs root to
    /// install.
    Setup(setup::Options),
    /// Build the eBPF object (monitor-ebpf, release, with Debian's toolchain) into
    /// target/bpf/bpfel-unknown-none/release/monitor-ebpf.
    BuildEbpf,
    /// Build the eBPF object, then the nhiscope binary that embeds it.
    Build(build::Options),
    /// Set up, build in release, and run the daemon on examples/registry.yaml with events as
    /// JSON lines on stdout (as root).
    Run(run::Options),
    /// The local development ClickHouse server that `run` starts (data in .nhiscope/).
    Clickhouse(clickhouse::Options),
    /// Set up, build, then run every test (kernel tests included: they fail instead of
    /// skipping), `cargo fmt --check`, clippy with -D warnings (monitor-ebpf's too), cargo-deny
    /// and a short run of every fuzz target. What CI runs.
    Test(test::Options),
    /// Check the dependencies with cargo-deny (deny.toml): licences, RustSec advisories (the
    /// database is fetched first; failing to fetch it fails), duplicate versions, sources.
    /// cargo-deny is installed by `setup`.
    Deny(deny::Options),
    /// Measure the performance targets (README, "Measuring") in one run, as ratios against
    /// baselines taken in the same run: kernel cost per openat (vs a bpftrace one-liner), open+close loop
    /// slowdown, userspace pipeline throughput, idle RSS and CPU. Builds in release first.
    /// Needs root, bpftool and bpftrace; takes about 2 minutes after the build. Writes
    /// target/bench/results.json and target/bench/results.md.
    Bench(bench::Options),
    /// Build the fuzz targets of fuzz/ (libFuzzer, AddressSanitizer) and run each for N
    /// seconds: the registry, the ClickHouse config, DNS packets, ring-buffer records, the
    /// live feed's lines and a connection's first bytes (TLS ClientHello, HTTP request). Prints
    /// each target's runs; fails on a crash, naming the input.
    Fuzz(fuzz::Options),
    /// Build the Debian package (target/debian/nhiscope_VERSION_ARCH.deb): the release binary
    /// with its eBPF object, the hardened systemd unit, /etc/nhiscope's defaults, man pages
    /// and shell completions. Needs dpkg-dev (`cargo xtask setup`).
    Package(package::Options),
    /// Build the daemon's container image (deploy/container/Containerfile) with podman, on a
    /// Debian 12 base made here by debootstrap (no image is pulled). Needs root; about a
    /// minute the first time (the root filesystem is kept in target/container/rootfs).
    Container(container::Options),
    /// Open and close one path N times (the benchmark's workload; prints JSON).
    #[command(hide = true)]
    OpenLoop(bench::open_loop::Options),
    /// Loopback TCP workloads (the benchmark's; prints JSON).
    #[command(hide = true)]
    TcpLoop(bench::tcp_loop::Options),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup(opts) => setup::run(&opts),
        Task::BuildEbpf => ebpf::build().map(drop),
        Task::Build(opts) => build::run(&opts).map(drop),
        Task::Run(opts) => run::run(&opts),
        Task::Test(opts) => test::run(&opts),
        Task::Deny(opts) => deny::run(&opts),
        Task::Clickhouse(opts) => clickhouse::run(&opts),
        Task::Bench(opts) => bench::run(&opts),
        Task::Fuzz(opts) => fuzz::run(&opts),
        Task::Package(opts) => package::run(&opts).map(drop),
        Task::Container(opts) => container::run(&opts),
        Task::OpenLoop(opts) => bench::open_loop::run(&opts),
        Task::TcpLoop(opts) => bench::tcp_loop::run(&opts),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks a command line's definition only when it parses one: every task's options
    /// are checked here (unique names and groups, valid defaults), not at a user's first run.
    #[test]
    fn every_task_has_a_well_formed_command_line() {
        super::Cli::command().debug_assert();
    }
}
