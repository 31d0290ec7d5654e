//! The `shmpipe-sidecar` binary: configuration, logging, runtime; the rest is `server::run`.

use std::io::IsTerminal;
use std::process::ExitCode;

use shmpipe_sidecar::config::{Config, LogFormat, EXIT_USAGE};
use tracing_subscriber::EnvFilter;

fn init_logging(cfg: &Config) {
    // Validated in `Config::load`.
    let filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true);
    match cfg.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("shmpipe-sidecar: invalid configuration: {msg}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    init_logging(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cfg.worker_threads))
        .thread_name("shmpipe-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(shmpipe_sidecar::server::run(cfg));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!("{msg}");
            eprintln!("shmpipe-sidecar: {msg}");
            ExitCode::FAILURE
        }
    }
}
