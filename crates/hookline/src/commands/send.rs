//! `hookline send`: post a correctly signed test event and show the answer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use hookline_signature::{Keyset, Message, Scheme};

/// Post a signed event to URL and print the response status, headers and body.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline send http://localhost:3000/webhooks --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \\
      --event-type job.succeeded --data '{\"job\":\"job_1\"}'
  hookline send http://localhost:3000/github --scheme github --secret 'my secret' --body-file push.json

With --data the body is {\"type\", \"timestamp\", \"data\"}; with --body-file it is the file, byte for byte.
Exit status: 0 on a 2xx answer, 1 on any other answer or no answer, 2 on a usage error.")]
pub struct Args {
    /// Where to post.
    url: String,
    /// Secret to sign with; repeat during a rotation.
    #[arg(long = "secret", required = true)]
    secrets: Vec<String>,
    /// Signature scheme.
    #[arg(long, default_value = "standard")]
    scheme: Scheme,
    /// Event type, the payload's `type`.
    #[arg(long, default_value = "hookline.test")]
    event_type: String,
    /// JSON for the payload's `data`.
    #[arg(long, conflicts_with = "body_file")]
    data: Option<String>,
    /// Send this file as the body instead of a generated payload.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Message id; generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// An extra request header, `name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_parser = super::parse_header)]
    headers: Vec<(String, String)>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let url =
        reqwest::Url::parse(&args.url).with_context(|| format!("invalid URL {:?}", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("URL must be http or https, got {:?}", url.scheme());
    }
    let keys = Keyset::new(args.scheme, &args.secrets).context("unusable --secret")?;
    let body = match &args.body_file {
        Some(path) => super::read_body(Some(path))?,
        None => event_payload(&args.event_type, args.data.as_deref())?,
    };
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| super::new_message_id(args.scheme));
    let signed = keys.sign(&Message {
        id: &id,
        timestamp: super::unix_now(),
        body: &body,
    })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(post(url, &args, signed, body))
}

async fn post(
    url: reqwest::Url,
    args: &Args,
    signed: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(args.timeout))
        .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in signed.iter().map(|(n, v)| (*n, v.as_str())) {
        request = request.header(name, value);
    }
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            println!("no answer: {}", describe(&error));
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = response.status();
    println!("{:?} {status}", response.version());
    for (name, value) in response.headers() {
        println!("{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    println!();
    let body = response.bytes().await.unwrap_or_default();
    println!("{}", String::from_utf8_lossy(&body));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The payload Standard Webhooks recommends: `{type, timestamp, data}`.
fn event_payload(event_type: &str, data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let data: serde_json::Value = match data {
        Some(text) => serde_json::from_str(text).context("--data is not valid JSON")?,
        None => serde_json::json!({}),
    };
    let payload = serde_json::json!({
        "type": event_type,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    Ok(serde_json::to_vec(&payload)?)
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
