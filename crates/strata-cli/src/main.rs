//! `strata`: the command-line front of the strata crates. Argument parsing, logging and
//! exit codes live here; the work lives in the library crates.

mod cli;
mod commands;
mod eval;
mod logging;
mod progress;
mod run;
mod synth;
mod train;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as DataFusion's own CLI uses: curation allocates and frees many
/// multi-megabyte Arrow buffers, which the system allocator maps and unmaps each time
/// (a page fault per page, every time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: the contract with schedulers (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: the job succeeded (warnings allowed).
    Success = 0,
    /// 1: checks or gates failed (or `shards verify` found a mismatch).
    Failed = 1,
    /// 3: the job ran but part of it could not (a check with a SQL error); the same
    /// code as an input, config or runtime error.
    Error = 3,
}

/// 3: input, config or runtime error (2, usage errors, is clap's own).
const EXIT_ERROR: u8 = 3;

/// Whether logs are JSON: then a failure is also logged as an event a scheduler can parse.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn args_json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// candle sizes its CPU kernels' thread pool from `RAYON_NUM_THREADS`; when that is
/// unset it counts the physical cores again on every matrix product, by parsing
/// `/proc/cpuinfo` (seen in perf; training on Adult runs 1.6 times faster without it).
/// Counting once and setting the variable keeps the same thread count without the cost.
fn pin_kernel_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = num_cpus::get_physical()
            .min(std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        // SAFETY: called first thing in `main`, before the runtime or any other thread
        // exists, so nothing can read the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
        }
    }
}

/// One line: the error and its causes, so a scheduler's log keeps all of it (a cause
/// whose text its parent already shows is not repeated).
pub fn error_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain().map(|e| strata_engine::one_line(&e.to_string())) {
        if !msg.contains(&cause) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&cause);
        }
    }
    msg
}

fn main() -> ExitCode {
    pin_kernel_threads();
    let args = cli::Cli::parse();
    if let Err(e) = logging::init(&args.global) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    JSON_LOGS.store(
        args.global.log_format == cli::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(err) => {
            let msg = error_line(&err);
            if args_json_logs() {
                tracing::error!(error = %msg, "strata failed");
            }
            eprintln!("error: {}", strata_spec::printable(&msg));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
