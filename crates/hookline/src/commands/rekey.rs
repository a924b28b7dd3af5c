//! `hookline rekey`: the command-line side of [`hookline::rekey`], the last step of a main
//! key rotation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hookline::config::Config;
use hookline_core::sealed::Resealable;

/// Re-seal every endpoint secret and source secret under the current main key.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A main key rotation:
  1. Restart every node with HOOKLINE_MAIN_KEY=<new key> and
     HOOKLINE_PREVIOUS_MAIN_KEYS=<old key>: new secrets are sealed under the new key,
     and both keys read.
  2. hookline rekey          (SQLite: with the server stopped; PostgreSQL: any time)
  3. Restart without HOOKLINE_PREVIOUS_MAIN_KEYS: the old key is no longer needed.

Values stored in plaintext (before any key was set) are sealed too. With only
HOOKLINE_PREVIOUS_MAIN_KEYS set, secrets are written back in plaintext instead.
Exit codes: 0 done, 2 setup error (bad key, a secret no configured key opens).")]
pub struct Args {
    /// A TOML file overriding the defaults (see config.default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rows re-sealed per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::load(args.config.as_deref(), &env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut seen = [0usize; 2];
    let done = runtime.block_on(hookline::rekey(&config, args.batch, |what, batch| {
        let (index, name) = match what {
            Resealable::Endpoints => (0, "endpoints"),
            Resealable::Sources => (1, "sources"),
        };
        seen[index] += batch.read;
        println!(
            "{name}: {} read, {} re-sealed in this batch ({} read so far)",
            batch.read, batch.resealed, seen[index]
        );
    }))?;
    let under = match config.main_keys.sealer()?.current_key_id() {
        Some(id) => format!("main key {id}"),
        None => "no key (plaintext)".to_owned(),
    };
    println!(
        "rekey done under {under}: {} of {} endpoints and {} of {} sources re-sealed; \
         the previous main keys are no longer needed",
        done.endpoints_resealed, done.endpoints_read, done.sources_resealed, done.sources_read
    );
    Ok(ExitCode::SUCCESS)
}
