//! The command line (see CONTRACT: `chartsync demo | central ... | satellite ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// chartsync: patient-record sync between clinic satellites and central.
#[derive(Debug, Parser)]
#[command(name = "chartsync", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a central and two satellites in a temporary folder and shows a
    /// sync with a merged edit and a conflict kept for review.
    ///
    /// Example: chartsync demo
    Demo,
    /// Central, the HQ server.
    #[command(subcommand)]
    Central(CentralCommand),
    /// A satellite, the clinic daemon.
    #[command(subcommand)]
    Satellite(SatelliteCommand),
}

#[derive(Debug, Subcommand)]
enum CentralCommand {
    /// Runs central (creates and migrates its data folder on first start).
    ///
    /// Example: chartsync central serve --config /etc/chartsync/central.toml
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SatelliteCommand {
    /// Runs a satellite: the local API and the scheduled sync jobs.
    ///
    /// Example: chartsync satellite run --config /etc/chartsync/satellite.toml
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo => anyhow::bail!("the demo is not available in this build yet"),
            Command::Central(CentralCommand::Serve { .. }) => {
                anyhow::bail!("central is not available in this build yet")
            }
            Command::Satellite(SatelliteCommand::Run { config }) => satellite_run(config).await,
        }
    })
}

async fn satellite_run(config: PathBuf) -> anyhow::Result<ExitCode> {
    let config = chartsync_satellite::SatelliteConfig::load(&config)?;
    let listen = config.listen;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "satellite listening");
    chartsync_satellite::serve(sat, listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
