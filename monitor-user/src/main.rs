//! The `nhiscope` binary: parses the command line and runs a subcommand. Exit codes: 0 success,
//! 1 a failure while running, 2 bad input (flags, registry, an unfit host).

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use nhiscope::{
    app::assets,
    app::cli::{Cli, Command, ConfigCommand, DaemonArgs, DbCommand, RegistryCommand, ScopeCommand},
    app::config,
    app::daemon,
    app::logging,
    domain::registry,
    publish::store,
    view::query,
    view::tui,
};

// mimalloc, tuned to give memory back (`app::alloc`).
nhiscope::daemon_allocator!();

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Daemon(a) = &cli.command {
        let sub = matches.subcommand_matches("daemon").unwrap_or(&matches);
        return run_daemon(a, a.flags(sub, &matches, &cli));
    }
    logging::init(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log_level.clone()),
        cli.log_format,
    );
    match cli.command {
        // Handled above: its logging waits for the config file.
        Command::Daemon(_) => ExitCode::SUCCESS,
        Command::Config(ConfigCommand::Check { file }) => {
            match config::check(&file, &|k| std::env::var(k).ok()) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for p in &problems {
                        logging::fatal_bare(&p.to_string());
                    }
                    ExitCode::from(2)
                }
            }
        }
        Command::Tui(a) => {
            let opts = match tui::Options::from_args(a) {
                Ok(o) => o,
                Err(e) => {
                    logging::fatal(&e.to_string());
                    return ExitCode::from(2);
                }
            };
            match tui::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    logging::fatal(&e.to_string());
                    ExitCode::from(1)
                }
            }
        }
        Command::Query(a) => finish(query::run_query(a, &mut std::io::stdout().lock())),
        Command::Scope(ScopeCommand::Suggest(a)) => {
            finish(query::run_suggest(a, &mut std::io::stdout().lock()))
        }
        Command::Db(DbCommand::Migrate {
            clickhouse,
            cluster,
        }) => match store::db_migrate(
            clickhouse.clickhouse_config.as_deref(),
            clickhouse.clickhouse.as_deref(),
            cluster.as_deref(),
        ) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                logging::fatal(&e.to_string());
                ExitCode::from(e.exit_code())
            }
        },
        Command::PackageAssets { out } => match assets::write(&out) {
            Ok(w) => {
                println!(
                    "{}: {} man pages, {} completion files",
                    out.display(),
                    w.man_pages.len(),
                    w.completions.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nhiscope: error: {}: {e}", out.display());
                ExitCode::from(1)
            }
        },
        Command::Registry(RegistryCommand::Check { file }) => match registry::load(&file) {
            Ok(r) => {
                println!(
                    "{}: ok: {} NHIs, {} watch patterns",
                    file.display(),
                    r.nhis.len(),
                    r.watch.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                logging::fatal_bare(&e.to_string());
                ExitCode::from(2)
            }
        },
    }
}

/// `nhiscope daemon`: the config file (if any) under the flags given, then the daemon. Logging
/// starts once the settings are known (the file may set its level and format); a bad setting is
/// said in the format the flags ask for, with exit code 2.
fn run_daemon(a: &DaemonArgs, flags: config::Flags) -> ExitCode {
    let loaded = a
        .config
        .as_deref()
        .map(config::load)
        .transpose()
        .and_then(|file| config::Settings::resolve(file.as_ref(), &flags).map(|s| (file, s)));
    let (file, settings) = match loaded {
        Ok(v) => v,
        Err(problems) => {
            logging::init(
                flags
                    .log_level
                    .as_deref()
                    .unwrap_or(config::DEFAULT_LOG_LEVEL),
                flags.log_format.unwrap_or_default(),
            );
            for p in &problems {
                logging::fatal_bare(&p.to_string());
            }
            return ExitCode::from(2);
        }
    };
    logging::init(&settings.log_level, settings.log_format);
    if let (Some(_), Some(f)) = (&flags.clickhouse_config, &file) {
        if f.config.clickhouse.is_some() {
            log::info!(
                "--clickhouse-config is used instead of the `clickhouse:` section of {}",
                f.path.display()
            );
        }
    }
    let reload = file.map(|f| config::Reload {
        path: f.path,
        flags,
        running: settings.clone(),
    });
    let opts = settings.options(a.all_opens, reload);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::fatal(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

fn finish(r: Result<(), query::QueryError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error.
        Err(query::QueryError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            logging::fatal(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}
