//! Command-line interface: every subcommand and flag, with its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// nhiscope: watch, from the kernel, how non-human identities (API keys, cloud keys,
/// service-account tokens, .env secrets) are used on this host, and flag every use that drifts
/// from the scope each was registered with.
#[derive(Debug, Parser)]
#[command(name = "nhiscope", version, propagate_version = true)]
pub struct Cli {
    /// Log level for messages on stderr: error, warn, info, debug, trace. Also RUST_LOG.
    #[arg(long, global = true, default_value = "info", env = "NHISCOPE_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and decide on every credential use and holder connection (needs root).
    Daemon(DaemonArgs),
    /// Work with NHI registry files.
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The NHI registry (YAML): the NHIs, their credential files and declared scope.
    #[arg(long, value_name = "FILE")]
    pub registry: PathBuf,

    /// Write every event as one JSON line to PATH, or to standard output with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,

    /// Size of the kernel-to-daemon ring buffer in bytes: a power of two, at least 4096.
    /// Larger survives longer bursts; overflow is counted and reported as `loss` events.
    #[arg(long, value_name = "BYTES", value_parser = parse_ringbuf_size)]
    pub ringbuf_size: Option<u32>,

    /// Host name written on every event (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Debugging: send every open from the kernel, bypassing the in-kernel prefilter. Costly.
    #[arg(long, hide = true)]
    pub all_opens: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Validate a registry file; every error names FILE:LINE:COLUMN. Exit code 2 when invalid.
    Check {
        /// The registry file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn parse_ringbuf_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ringbuf_size_must_be_a_power_of_two() {
        assert_eq!(parse_ringbuf_size("65536"), Ok(65536));
        assert!(parse_ringbuf_size("65535").is_err());
        assert!(parse_ringbuf_size("1024").is_err());
        assert!(parse_ringbuf_size("x").is_err());
    }
}
