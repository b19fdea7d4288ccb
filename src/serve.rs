//! `tessera serve`: load settings, start logs and traces, then the app's lifecycle: listen at
//! once, connect to the store (health NOT_SERVING until then), serve until SIGTERM or Ctrl-C,
//! drain, flush, exit 0.

use std::path::PathBuf;
use std::process::ExitCode;

use tessera::app::App;
use tessera::config::Settings;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Optional TOML settings file.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "tessera stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let otlp_endpoint = settings.otlp_endpoint()?;
    let telemetry = tessera::telemetry::init_with_traces(
        &settings.log,
        settings.log_format,
        otlp_endpoint.as_ref(),
    )?;
    let served = serve_until_stopped(settings).await;
    telemetry.shutdown().await;
    served
}

async fn serve_until_stopped(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let starting = App::start(settings).await?;
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
