//! `tessera serve`: load settings, start logs and traces, then the app's lifecycle: listen at
//! once, connect to the store (health NOT_SERVING until then), serve until SIGTERM or Ctrl-C,
//! drain, flush, exit 0. With `--port-file`, the bound addresses are written to a file once
//! every listener is bound (`tessera::app::PortFile`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use tessera::app::App;
use tessera::config::Config;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Optional TOML settings file.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,

    /// Once every listener is bound, write their addresses to this file as JSON,
    /// {"grpc":"127.0.0.1:50051","metrics":"127.0.0.1:9090"} plus "health" when that listener is
    /// set, replacing the file whole: how a tool that starts the server on port 0 learns its
    /// ports.
    #[arg(long, env = "TESSERA_PORT_FILE", value_name = "PATH")]
    port_file: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once, each cause once: as a log event when logging is up (so that JSON log
            // collectors see it), else as a plain line.
            let message = crate::cli::error_chain(error.as_ref());
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = %message, "tessera stopped");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let telemetry = tessera::telemetry::init_with_traces(&config.telemetry)?;
    let served = serve_until_stopped(config, args.port_file.as_deref()).await;
    telemetry.shutdown().await;
    served
}

async fn serve_until_stopped(config: Config, port_file: Option<&Path>) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let starting = App::start(config).await?;
    if let Some(path) = port_file {
        let ports = starting.port_file();
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || ports.write(&owned))
            .await?
            .with_context(|| format!("cannot write the port file {}", path.display()))?;
    }
    let app = tokio::select! {
        app = starting.connect() => app?,
        () = &mut shutdown => {
            tracing::info!("stopped before the store was reached");
            return Ok(());
        }
    };
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

/// SIGTERM or Ctrl-C. The SIGTERM handler is registered here, before the first await, so a
/// SIGTERM that arrives while the app is still starting is a clean stop too.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %error, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot listen for sigterm");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = terminate => {},
        }
        tracing::info!("shutdown signal received");
    }
}
