//! `cargo xtask package`: the Debian package, built with `dpkg-deb` from a tree made here.
//!
//! What goes in, and from where:
//! - `/usr/bin/nhiscope`: the release binary with the eBPF object embedded (`build::run`), or
//!   the binary given with `--binary`, stripped;
//! - the service and the files under `/etc` (marked as conffiles) and the maintainer scripts,
//!   from `packaging/debian/`;
//! - man pages and shell completions, written by the packaged binary itself (`nhiscope
//!   package-assets`, hidden), so they describe that binary;
//! - `/usr/share/doc/nhiscope`: `copyright` (with every statically linked crate and its
//!   license, from `cargo metadata`), `changelog.Debian.gz`, the example registry.
//!
//! `Depends:` comes from `dpkg-shlibdeps` on the binary, plus what the maintainer scripts run.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{build, cmd, cmd::Cmd};

/// The package's name, and the name of its service, user and directories.
const NAME: &str = "nhiscope";
/// The Debian revision appended to the workspace's version.
const REVISION: &str = "1";

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Package this `nhiscope` binary instead of building one in release (it must embed the
    /// eBPF object, as `cargo xtask build` makes it; the end-to-end tests package the binary
    /// they test this way).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// Where the .deb is written (default: target/debian).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Where a file of the package comes from and goes.
struct Placed {
    to: &'static str,
    mode: u32,
}

/// The files copied from packaging/debian into the tree, by their name there.
const FILES: &[(&str, Placed)] = &[
    (
        "nhiscope.service",
        Placed {
            to: "lib/systemd/system/nhiscope.service",
            mode: 0o644,
        },
    ),
    (
        // A link to examples/daemon.yaml: the example is the default.
        "config.yaml",
        Placed {
            to: "etc/nhiscope/config.yaml",
            mode: 0o644,
        },
    ),
    (
        "registry.yaml",
        Placed {
            to: "etc/nhiscope/registry.yaml",
            mode: 0o644,
        },
    ),
    (
        "clickhouse.yaml",
        Placed {
            to: "etc/nhiscope/clickhouse.yaml",
            mode: 0o644,
        },
    ),
    (
        "default",
        Placed {
            to: "etc/default/nhiscope",
            mode: 0o644,
        },
    ),
    (
        "postinst",
        Placed {
            to: "DEBIAN/postinst",
            mode: 0o755,
        },
    ),
    (
        "prerm",
        Placed {
            to: "DEBIAN/prerm",
            mode: 0o755,
        },
    ),
    (
        "postrm",
        Placed {
            to: "DEBIAN/postrm",
            mode: 0o755,
        },
    ),
];

/// Completions as clap_complete names them, and where each shell looks for them.
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "nhiscope.bash",
        "usr/share/bash-completion/completions/nhiscope",
    ),
    ("_nhiscope", "usr/share/zsh/vendor-completions/_nhiscope"),
    (
        "nhiscope.fish",
        "usr/share/fish/vendor_completions.d/nhiscope.fish",
    ),
];

/// What the maintainer scripts run, beyond the essential packages.
const SCRIPT_DEPENDS: &str = "adduser";

pub fn run(opts: &Options) -> Result<PathBuf> {
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => build::run(&build::Options { release: true })?,
    };
    ensure_embeds_bpf(&binary)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| cmd::target_dir().join("debian"));
    let arch = Cmd::new("dpkg")
        .arg("--print-architecture")
        .probe()
        .map(|s| s.trim().to_owned())
        .context("`dpkg --print-architecture` failed: is this a Debian machine?")?;
    let version = format!("{}-{REVISION}", env!("CARGO_PKG_VERSION"));
    let tree = out.join(format!("{NAME}_{version}_{arch}"));
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let src = cmd::workspace_root().join("packaging/debian");

    // The binary stripped as Debian's policy wants it (what dh_strip does).
    let bin = tree.join("usr/bin/nhiscope");
    make_parent(&bin)?;
    Cmd::new("objcopy")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg(&binary)
        .arg(&bin)
        .run()
        .context("objcopy is in Debian's binutils")?;
    set_mode(&bin, 0o755)?;

    for (name, placed) in FILES {
        let to = tree.join(placed.to);
        make_parent(&to)?;
        fs::copy(src.join(name), &to)
            .with_context(|| format!("copying {} to {}", src.join(name).display(), to.display()))?;
        set_mode(&to, placed.mode)?;
    }
    let conffiles: String = FILES
        .iter()
        .filter(|(_, p)| p.to.starts_with("etc/"))
        .map(|(_, p)| format!("/{}\n", p.to))
        .collect();
    write(&tree.join("DEBIAN/conffiles"), &conffiles, 0o644)?;

    assets(&bin, &tree, &out)?;
    docs(&src, &tree, &version)?;

    let depends = depends(&bin, &out)?;
    let control = fs::read_to_string(src.join("control"))
        .context("reading packaging/debian/control")?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@SIZE@", &installed_size_kib(&tree)?.to_string())
        .replace("@DEPENDS@", &depends)
        .replace("@REPOSITORY@", repository());
    write(&tree.join("DEBIAN/control"), &control, 0o644)?;
    md5sums(&tree, &conffiles)?;
    open_dirs(&tree)?;

    let deb = out.join(format!("{NAME}_{version}_{arch}.deb"));
    Cmd::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb)
        .run()?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// Refuses a binary without the eBPF object: it would install and then refuse to start. The
/// object is an ELF file for the BPF machine (`e_machine` 247) inside the binary.
fn ensure_embeds_bpf(binary: &Path) -> Result<()> {
    let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let embedded = bytes
        .windows(20)
        .any(|w| w.starts_with(b"\x7fELF") && w[18] == 247 && w[19] == 0);
    if !embedded {
        bail!(
            "{} has no eBPF object inside: build it with `cargo xtask build` (or leave out \
             --binary)",
            binary.display()
        );
    }
    Ok(())
}

/// Man pages (gzipped, in section 1) and completions, written by the packaged binary.
fn assets(bin: &Path, tree: &Path, out: &Path) -> Result<()> {
    let made = out.join("assets");
    if made.exists() {
        fs::remove_dir_all(&made).with_context(|| format!("removing {}", made.display()))?;
    }
    Cmd::new(bin)
        .args(["package-assets", "--out"])
        .arg(&made)
        .run()?;
    let man1 = tree.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages = 0;
    for entry in fs::read_dir(made.join("man"))? {
        let page = entry?.path();
        let Some(name) = page.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        gzip(&fs::read(&page)?, &man1.join(format!("{name}.gz")))?;
        pages += 1;
    }
    if pages == 0 {
        bail!("`nhiscope package-assets` wrote no man page");
    }
    for (name, to) in COMPLETIONS {
        let to = tree.join(to);
        make_parent(&to)?;
        fs::copy(made.join("completions").join(name), &to)
            .with_context(|| format!("the {name} completion"))?;
        set_mode(&to, 0o644)?;
    }
    Ok(())
}

/// /usr/share/doc/nhiscope: copyright, changelog.Debian.gz and the example registry.
fn docs(src: &Path, tree: &Path, version: &str) -> Result<()> {
    let doc = tree.join("usr/share/doc").join(NAME);
    fs::create_dir_all(doc.join("examples"))?;
    let crates = crate_licenses()?
        .iter()
        .map(|(krate, license)| format!(" {krate}: {license}"))
        .collect::<Vec<_>>()
        .join("\n");
    let copyright = fs::read_to_string(src.join("copyright"))?
        .replace("@CRATES@", &crates)
        .replace("@REPOSITORY@", repository());
    write(&doc.join("copyright"), &copyright, 0o644)?;
    // The commit's date, not the build's: the same source makes the same changelog.
    let git = |format: &str| {
        Cmd::new("git")
            .current_dir(&cmd::workspace_root())
            .args(["log", "-1", format])
            .probe()
            .map(|s| s.trim().to_owned())
    };
    let commit = git("--format=%h").unwrap_or_else(|| "unknown".to_owned());
    let date = git("--format=%cD").unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into());
    let changelog = fs::read_to_string(src.join("changelog"))?
        .replace("@VERSION@", version)
        .replace("@COMMIT@", &commit)
        .replace("@DATE@", &date);
    gzip(changelog.as_bytes(), &doc.join("changelog.Debian.gz"))?;
    let example = cmd::workspace_root().join("examples/registry.yaml");
    let to = doc.join("examples/registry.yaml");
    fs::copy(&example, &to).with_context(|| format!("copying {}", example.display()))?;
    set_mode(&to, 0o644)
}

/// `repository` from the workspace's Cargo.toml.
fn repository() -> &'static str {
    env!("CARGO_PKG_REPOSITORY")
}

/// Every crate linked into `nhiscope` (monitor-user's normal dependencies, transitively), with
/// its license, from `cargo metadata`.
fn crate_licenses() -> Result<BTreeMap<String, String>> {
    let json = cmd::cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host_triple()?])
        .probe()
        .context("`cargo metadata` failed")?;
    let meta: serde_json::Value = serde_json::from_str(&json).context("cargo metadata's JSON")?;
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root = packages
        .iter()
        .find(|(_, p)| p["name"] == "monitor-user")
        .map(|(id, _)| *id)
        .context("cargo metadata: no monitor-user")?;
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let deps = nodes.get(id).and_then(|n| n["deps"].as_array());
        for dep in deps.into_iter().flatten() {
            // Normal dependencies only: build scripts' and tests' are not linked in.
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()));
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                todo.push(pkg);
            }
        }
    }
    let mut out = BTreeMap::new();
    for id in seen {
        let p = packages[id];
        // The workspace's own crates are the package's own (Files: *).
        if p["source"].is_null() {
            continue;
        }
        let name = format!(
            "{} {}",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?")
        );
        let license = p["license"].as_str().unwrap_or("see the crate's sources");
        out.insert(name, license.to_owned());
    }
    Ok(out)
}

/// The host's target triple (`rustc -vV`), for `cargo metadata --filter-platform`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Cmd::new(rustc)
        .arg("-vV")
        .probe()
        .context("`rustc -vV` failed")?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host")
}

/// `Depends:`: the shared libraries the binary links (`dpkg-shlibdeps`, which wants a
/// debian/control beside it), and what the maintainer scripts run.
fn depends(bin: &Path, out: &Path) -> Result<String> {
    let work = out.join("shlibdeps");
    fs::create_dir_all(work.join("debian"))?;
    fs::write(
        work.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"),
    )?;
    let bin = fs::canonicalize(bin)?;
    let printed = Cmd::new("dpkg-shlibdeps")
        .current_dir(&work)
        .args(["-O", "-e"])
        .arg(&bin)
        .probe()
        .context("`dpkg-shlibdeps` failed: it is in Debian's dpkg-dev (`cargo xtask setup`)")?;
    let shlibs = printed
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(format!("{shlibs}, {SCRIPT_DEPENDS}"))
}

/// DEBIAN/md5sums: every file shipped but the conffiles (dpkg keeps those apart).
fn md5sums(tree: &Path, conffiles: &str) -> Result<()> {
    let mut files = Vec::new();
    walk(tree, &mut files)?;
    let mut rel: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(tree).ok())
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|f| !f.starts_with("DEBIAN/"))
        .filter(|f| !conffiles.lines().any(|c| c.trim_start_matches('/') == f))
        .collect();
    rel.sort();
    let sums = Cmd::new("md5sum")
        .current_dir(tree)
        .arg("--")
        .args(&rel)
        .probe()
        .context("md5sum failed")?;
    write(&tree.join("DEBIAN/md5sums"), &sums, 0o644)
}

/// Installed-Size: the tree's files in KiB, rounded up per file as dpkg-gencontrol does.
fn installed_size_kib(tree: &Path) -> Result<u64> {
    let mut files = Vec::new();
    walk(tree, &mut files)?;
    let mut kib = 0;
    for f in files.iter().filter(|f| !f.starts_with(tree.join("DEBIAN"))) {
        kib += fs::metadata(f)?.len().div_ceil(1024);
    }
    Ok(kib)
}

fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, into)?;
        } else {
            into.push(path);
        }
    }
    Ok(())
}

/// gzip -9n (no name, no timestamp: the same input makes the same bytes, as Debian wants).
fn gzip(data: &[u8], to: &Path) -> Result<()> {
    make_parent(to)?;
    let file = fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut child = std::process::Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .spawn()
        .context("running gzip")?;
    child
        .stdin
        .take()
        .context("gzip's stdin")?
        .write_all(data)
        .context("writing to gzip")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("gzip failed for {} ({status})", to.display());
    }
    set_mode(to, 0o644)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    make_parent(path)?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

fn make_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Every directory of the tree 0755, whatever the umask of whoever builds.
fn open_dirs(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            open_dirs(&entry.path())?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
