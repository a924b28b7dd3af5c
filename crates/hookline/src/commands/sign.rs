//! `hookline sign`: print the headers that sign a body.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hookline_signature::{Keyset, Message, Scheme};

/// Print the signature headers for a body, one `name: value` per line.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  echo -n '{\"type\":\"ping\"}' | hookline sign --scheme standard --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  hookline sign --scheme github --secret 'my secret' --body-file payload.json
  hookline sign --scheme svix --secret whsec_NEW... --secret whsec_OLD... --id msg_1 --timestamp 1700000000")]
pub struct Args {
    /// Signature scheme: standard, svix, openai, replicate, github, stripe, slack, shopify,
    /// huggingface.
    #[arg(long)]
    scheme: Scheme,
    /// Secret to sign with; repeat during a rotation (every key signs where the scheme
    /// carries several signatures, else the first).
    #[arg(long = "secret", required = true)]
    secrets: Vec<String>,
    /// Message id (`webhook-id`, `X-GitHub-Delivery`, ...); generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// Unix seconds to sign with; now when absent.
    #[arg(long, allow_negative_numbers = true)]
    timestamp: Option<i64>,
    /// File holding the body; standard input when absent.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let keys = Keyset::new(args.scheme, &args.secrets).context("unusable --secret")?;
    let body = super::read_body(args.body_file.as_deref())?;
    let id = args
        .id
        .unwrap_or_else(|| super::new_message_id(args.scheme));
    let timestamp = args.timestamp.unwrap_or_else(super::unix_now);
    let headers = keys.sign(&Message {
        id: &id,
        timestamp,
        body: &body,
    })?;
    for (name, value) in headers {
        println!("{name}: {value}");
    }
    Ok(ExitCode::SUCCESS)
}
