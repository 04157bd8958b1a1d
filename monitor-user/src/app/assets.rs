//! What a package ships beside the binary that is made from the command line's definition
//! (`cli`): a man page per command and subcommand (clap_mangen) and the completions of bash,
//! zsh and fish (clap_complete). `cargo xtask package` asks the binary it packages for them
//! (`nhiscope package-assets --out DIR`, hidden), so they always describe that very binary.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::app::cli::Cli;

/// What [`write`] made, by kind.
#[derive(Debug, Default)]
pub struct Written {
    /// `DIR/man/nhiscope.1`, `DIR/man/nhiscope-daemon.1`, ...
    pub man_pages: Vec<PathBuf>,
    /// `DIR/completions/nhiscope.bash`, `_nhiscope` (zsh), `nhiscope.fish`.
    pub completions: Vec<PathBuf>,
}

/// Writes the man pages into `out/man` and the completions into `out/completions` (both made
/// when missing).
pub fn write(out: &Path) -> io::Result<Written> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut written = Written::default();
    for entry in fs::read_dir(&man)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            written.man_pages.push(path);
        }
    }
    written.man_pages.sort();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        written.completions.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "nhiscope",
            &completions,
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_per_command_and_three_completions() {
        let out = std::env::temp_dir().join(format!("nhiscope-assets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let w = write(&out).expect("write");
        let names: Vec<String> = w
            .man_pages
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        for page in [
            "nhiscope.1",
            "nhiscope-daemon.1",
            "nhiscope-registry-check.1",
            "nhiscope-db-migrate.1",
            "nhiscope-scope-suggest.1",
            "nhiscope-tui.1",
            "nhiscope-query.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
        // The hidden subcommand is a packaging tool, not a command to document.
        assert!(
            !names.iter().any(|n| n.contains("package-assets")),
            "{names:?}"
        );
        let daemon = fs::read_to_string(out.join("man/nhiscope-daemon.1")).expect("read");
        assert!(daemon.contains("registry"), "{daemon}");
        let bash = fs::read_to_string(out.join("completions/nhiscope.bash")).expect("read");
        assert!(
            bash.contains("--live-socket"),
            "bash completion lacks the daemon's flags"
        );
        assert!(out.join("completions/_nhiscope").is_file());
        assert!(out.join("completions/nhiscope.fish").is_file());
        let _ = fs::remove_dir_all(&out);
    }
}
