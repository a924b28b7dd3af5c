//! `hookline verify`: check a captured request and say exactly why it fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use hookline_signature::{Scheme, Tolerance, VerifyOptions};

/// Verify a captured request: prints `valid` (exit 0), or the precise reason it does not
/// verify (exit 1).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline verify --scheme standard --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \\
      -H 'webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek' -H 'webhook-timestamp: 1614265330' \\
      -H 'webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' \\
      --tolerance none <<< '{\"test\": 2432232314}'
  hookline verify --scheme github --secret 'my secret' -H 'X-Hub-Signature-256: sha256=...' --body-file payload.json

Exit status: 0 valid, 1 does not verify, 2 usage error.")]
pub struct Args {
    /// Signature scheme: standard, svix, openai, replicate, github, stripe, slack, shopify,
    /// huggingface.
    #[arg(long)]
    scheme: Scheme,
    /// Secret to verify with; repeat to accept any of several (rotation).
    #[arg(long = "secret", required = true)]
    secrets: Vec<String>,
    /// A request header, `name: value`; repeat for each header.
    #[arg(short = 'H', long = "header", value_parser = super::parse_header)]
    headers: Vec<(String, String)>,
    /// Timestamp tolerance in seconds, or `none` to skip the check; the scheme's default
    /// when absent (300, none for replicate).
    #[arg(long, value_parser = parse_tolerance)]
    tolerance: Option<Tolerance>,
    /// Verify as if the clock read these Unix seconds.
    #[arg(long, allow_negative_numbers = true)]
    now: Option<i64>,
    /// File holding the exact raw body; standard input when absent.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = super::read_body(args.body_file.as_deref())?;
    let mut options = VerifyOptions::default();
    if let Some(tolerance) = args.tolerance {
        options = options.tolerance(tolerance);
    }
    if let Some(now) = args.now {
        options = options.now(now);
    }
    match hookline_signature::verify(args.scheme, &args.secrets, &args.headers, &body, options) {
        Ok(_) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("invalid ({}): {error}", error.code());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn parse_tolerance(text: &str) -> anyhow::Result<Tolerance> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Tolerance::Disabled);
    }
    match text.parse::<u64>() {
        Ok(secs) => Ok(Tolerance::Within(Duration::from_secs(secs))),
        Err(_) => bail!("expected a number of seconds or `none`, got {text:?}"),
    }
}
