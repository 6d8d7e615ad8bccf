use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Logs go to stderr so stdout carries only the command's output (a table, JSON).
/// A `STRATA_LOG` that is not a valid filter is an error, not silently ignored.
pub fn init(args: &GlobalArgs) -> Result<(), String> {
    let default = if args.quiet {
        "error"
    } else {
        match args.verbose {
            0 => {
                "warn,strata=info,strata_engine=info,strata_profile=info,strata_train=info,strata_cli=info"
            }
            1 => {
                "info,strata=debug,strata_engine=debug,strata_profile=debug,strata_train=debug,strata_cli=debug"
            }
            _ => {
                "debug,strata=trace,strata_engine=trace,strata_profile=trace,strata_train=trace,strata_cli=trace"
            }
        }
    };
    let filter = match std::env::var("STRATA_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| format!("STRATA_LOG={spec:?} is not a log filter: {e}"))?,
        _ => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colour only for a person at a terminal; a scheduler's log file gets plain text.
    let builder = builder.with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => builder.with_target(false).compact().init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
