//! `hookline serve` and `hookline migrate`: the command-line side of [`hookline::run`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hookline::config::{Config, Role};
use hookline_core::store::Migrations;
use tokio_util::sync::CancellationToken;

/// Run Hookline: the Svix-compatible API and the delivery engine.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline serve                                  # SQLite at ./hookline.db, 127.0.0.1:8071
  hookline serve --config hookline.toml
  HOOKLINE_LISTEN=0.0.0.0:8071 HOOKLINE_ALLOWED_SUBNETS=10.0.0.0/8 hookline serve
  hookline migrate && hookline serve --no-migrate --role worker   # a delivery-only node

Settings come from config.default.toml, then --config, then HOOKLINE_* variables.")]
pub struct Args {
    /// A TOML file overriding the defaults (see config.default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// What this node does: `api`, `worker`, or `all` (also `both`; wins over HOOKLINE_ROLE).
    #[arg(long, value_parser = ["api", "worker", "all", "both"])]
    role: Option<String>,
    /// Do not apply pending migrations; refuse to start until `hookline migrate` has.
    #[arg(long)]
    no_migrate: bool,
}

/// Apply the database migrations and exit.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  HOOKLINE_DATABASE_URL=sqlite://hookline.db hookline migrate")]
pub struct MigrateArgs {
    /// A TOML file overriding the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Open files a node needs besides its deliveries' connections: the requests it serves,
/// its database's files and connections, its listener.
const OTHER_OPEN_FILES: u64 = 1024;

/// Lifts this process's soft limit of open files to its hard limit, as servers do: each
/// delivery in flight holds a connection, and the usual soft limit (1024) is below the
/// default `delivery.concurrency` with the requests served on top. Says so when even the
/// hard limit leaves too few.
fn raise_open_files_limit(config: &Config) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = config.delivery.concurrency as u64 + OTHER_OPEN_FILES;
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` is no limit.
    let Some(mut current) = current else {
        return;
    };
    let target = maximum.unwrap_or(wanted);
    if target > current {
        let raised = Rlimit {
            current: Some(target),
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = current, to = target, "raised the open files limit");
                current = target;
            }
            Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
        }
    }
    if current < wanted {
        tracing::warn!(
            limit = current,
            wanted,
            "the open files limit is below what delivery.concurrency needs; raise the hard \
             limit (ulimit -Hn, systemd's LimitNOFILE=) or lower delivery.concurrency"
        );
    }
}

fn load(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = std::env::vars().collect();
    Config::load(file, &env)
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = load(args.config.as_deref())?;
    let database = runtime()?.block_on(hookline::migrate(&config))?;
    println!("migrations applied to {database}");
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = load(args.config.as_deref())?;
    if let Some(role) = &args.role {
        config.role = Role::parse(role)?;
    }
    let migrations = if args.no_migrate {
        Migrations::Require
    } else {
        Migrations::Apply
    };
    init_logging(&config);
    raise_open_files_limit(&config);
    let options = hookline::Options {
        migrations,
        ..hookline::Options::default()
    };
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new requests, finishing deliveries in flight");
            on_signal.cancel();
        });
        hookline::run_with(config, None, shutdown, options).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
