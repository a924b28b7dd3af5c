//! `hookline`: the command-line entry point of Hookline.
//!
//! Each subcommand lives in its own module under `commands/`. This file only parses the
//! command line and maps outcomes to exit codes: 0 on success, 1 when the command ran and
//! the answer is "no" (a signature that does not verify, a send that got a non-2xx), 2 on
//! a usage error.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: requests are allocated on one thread and freed
/// on another, which glibc serves through locked arenas. Measured with `hookline-bench`
/// (fan-out to 100 endpoints, six alternating runs): about 14 % less server CPU per
/// delivery, for a peak RSS of about 60 MiB instead of 23 MiB, flat under a backlog.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Send, receive, track and debug webhooks.
#[derive(Debug, Parser)]
#[command(name = "hookline", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(commands::serve::Args),
    Migrate(commands::serve::MigrateArgs),
    Rekey(commands::rekey::Args),
    Sign(commands::sign::Args),
    Verify(commands::verify::Args),
    Send(commands::send::Args),
    Listen(commands::listen::ListenArgs),
    Tail(commands::listen::TailArgs),
    /// Long-running AI jobs: list, get, create, cancel.
    Job(commands::job::Args),
    /// Applications: list, get, create, update, delete.
    App(commands::resource::AppArgs),
    /// An application's endpoints: list, get, create, update, delete.
    Endpoint(commands::resource::EndpointArgs),
    /// An application's messages: list, get, create.
    Msg(commands::resource::MsgArgs),
    /// Delivery attempts: list (of a message or to an endpoint), get, resend.
    Attempt(commands::resource::AttemptArgs),
    /// Sources that receive webhooks: list, get, create, update, delete.
    Source(commands::resource::SourceArgs),
    /// The requests a source received: list, get, replay.
    Request(commands::resource::RequestArgs),
    /// Send again the failed deliveries of a time range.
    Recover(commands::resource::RecoverArgs),
    /// Forward again the requests a source accepted in a time range.
    Replay(commands::resource::ReplayArgs),
    /// Named servers and tokens for the commands above.
    Profile(commands::profile::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Migrate(args) => commands::serve::migrate(args),
        Command::Rekey(args) => commands::rekey::run(args),
        Command::Sign(args) => commands::sign::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Send(args) => commands::send::run(args),
        Command::Listen(args) => commands::listen::listen(args),
        Command::Tail(args) => commands::listen::tail(args),
        Command::Job(args) => commands::job::run(args),
        Command::Profile(args) => commands::profile::run(args),
        Command::App(args) => commands::resource::app(args),
        Command::Endpoint(args) => commands::resource::endpoint(args),
        Command::Msg(args) => commands::resource::msg(args),
        Command::Attempt(args) => commands::resource::attempt(args),
        Command::Source(args) => commands::resource::source(args),
        Command::Request(args) => commands::resource::request(args),
        Command::Recover(args) => commands::resource::recover(args),
        Command::Replay(args) => commands::resource::replay(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(commands::USAGE_ERROR)
        }
    }
}
