//! `hookline job list|get|create|cancel`: the job tracker's API from a terminal, as a
//! table or, with `--json`, as the API's own JSON.
//!
//! Exit codes: 0 done, 1 the server refused (its error code and detail are printed),
//! 2 bad usage, 3 the server could not be reached or failed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// The server refused the request.
const REFUSED: u8 = 1;
/// The server could not be reached, or failed (5xx).
const UNREACHABLE: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JobCommand,
    /// The Hookline server.
    #[arg(
        long,
        global = true,
        env = "HOOKLINE_SERVER",
        default_value = "http://127.0.0.1:8071"
    )]
    server: String,
    /// An admin token (or, to read, a token of the job's application).
    #[arg(
        long,
        global = true,
        env = "HOOKLINE_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// List jobs, newest first.
    List {
        /// Only this application's jobs (id or uid).
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// queued, running, succeeded, failed, cancelled or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one job (id or uid) with its timeline.
    Get {
        job: String,
        /// Wait up to this many seconds (at most 60) for its status to change.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Register a job to track.
    #[command(after_help = "\
Examples:
  hookline job create --provider openai_batch --provider-job-id batch_abc --app acme
  hookline job create --provider custom --app acme --group nightly --metadata '{\"user\":\"u1\"}'
  hookline job create --provider replicate_prediction --app acme \\
      --request '{\"version\":\"…\",\"input\":{\"prompt\":\"a fox\"}}'")]
    Create {
        /// openai_response, openai_batch, openai_fine_tuning, openai_eval_run,
        /// replicate_prediction, replicate_training, anthropic_message_batch, gemini_batch
        /// or custom.
        #[arg(long)]
        provider: String,
        /// The application that gets the job's events (id or uid).
        #[arg(long)]
        app: String,
        /// The provider's id of the job.
        #[arg(long)]
        provider_job_id: Option<String>,
        #[arg(long)]
        uid: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// A JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// RFC 3339; 24 hours from now when not given.
        #[arg(long)]
        deadline: Option<String>,
        /// Track by webhook alone: never poll.
        #[arg(long, conflicts_with_all = ["poll_after", "poll_interval", "poll_max_interval"])]
        no_poll: bool,
        #[arg(long)]
        poll_after: Option<u64>,
        #[arg(long)]
        poll_interval: Option<u64>,
        #[arg(long)]
        poll_max_interval: Option<u64>,
        /// The provider call to submit (a JSON object), instead of --provider-job-id.
        #[arg(long, conflicts_with = "provider_job_id")]
        request: Option<String>,
    },
    /// Cancel a job (at its provider too, where it has a cancel call).
    Cancel { job: String },
}

/// What a call came to: the JSON answered, or the exit code of a failure already told.
type Outcome = Result<Value, u8>;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.token.is_empty() {
        bail!("a token is needed: --token or HOOKLINE_TOKEN");
    }
    let (method, path, body) = request(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(call(&args, method, &path, body));
    let value = match outcome {
        Ok(value) => value,
        Err(code) => return Ok(ExitCode::from(code)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        match &args.command {
            JobCommand::List { .. } => print_list(&value),
            _ => print_job(&value),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The API call a command makes.
fn request(command: &JobCommand) -> anyhow::Result<(Method, String, Option<Value>)> {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    Ok(match command {
        JobCommand::List {
            app,
            provider,
            status,
            group,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (name, value) in [
                ("appId", app),
                ("provider", provider),
                ("status", status),
                ("group", group),
            ] {
                if let Some(value) = value {
                    query.push(format!("{name}={}", encode(value)));
                }
            }
            (
                Method::GET,
                format!("/api/v1/job?{}", query.join("&")),
                None,
            )
        }
        JobCommand::Get { job, wait } => {
            let wait = wait.map(|secs| format!("?wait={secs}")).unwrap_or_default();
            (
                Method::GET,
                format!("/api/v1/job/{}{wait}", encode(job)),
                None,
            )
        }
        JobCommand::Cancel { job } => (
            Method::POST,
            format!("/api/v1/job/{}/cancel", encode(job)),
            None,
        ),
        JobCommand::Create {
            provider,
            app,
            provider_job_id,
            uid,
            group,
            metadata,
            deadline,
            no_poll,
            poll_after,
            poll_interval,
            poll_max_interval,
            request,
        } => {
            let mut body = Map::new();
            body.insert("provider".into(), json!(provider));
            body.insert("appId".into(), json!(app));
            for (name, value) in [
                ("providerJobId", provider_job_id),
                ("uid", uid),
                ("group", group),
                ("deadline", deadline),
            ] {
                if let Some(value) = value {
                    body.insert(name.into(), json!(value));
                }
            }
            for (name, text) in [("metadata", metadata), ("request", request)] {
                if let Some(text) = text {
                    let value: Value = serde_json::from_str(text)
                        .with_context(|| format!("--{name} must be a JSON object"))?;
                    if !value.is_object() {
                        bail!("--{name} must be a JSON object");
                    }
                    body.insert(name.into(), value);
                }
            }
            if *no_poll {
                body.insert("poll".into(), Value::Null);
            } else if poll_after.is_some() || poll_interval.is_some() || poll_max_interval.is_some()
            {
                body.insert(
                    "poll".into(),
                    json!({"after": poll_after, "interval": poll_interval,
                           "maxInterval": poll_max_interval}),
                );
            }
            (
                Method::POST,
                "/api/v1/job".into(),
                Some(Value::Object(body)),
            )
        }
    })
}

async fn call(args: &Args, method: Method, path: &str, body: Option<Value>) -> Outcome {
    let url = format!("{}{path}", args.server.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&args.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|error| {
        eprintln!("error: cannot reach {}: {error}", args.server);
        UNREACHABLE
    })?;
    let status = response.status();
    let text = response.text().await.map_err(|error| {
        eprintln!("error: the answer broke off: {error}");
        UNREACHABLE
    })?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(value);
    }
    let code = value["code"].as_str().unwrap_or("error");
    let detail = match &value["detail"] {
        Value::String(detail) => detail.clone(),
        Value::Array(errors) => errors
            .iter()
            .map(|e| {
                let loc: Vec<String> = e["loc"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|p| p.as_str().map_or(p.to_string(), str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{}: {}",
                    loc.join("."),
                    e["msg"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    eprintln!("error: {status} {code}: {detail}");
    Err(if status.is_server_error() {
        UNREACHABLE
    } else {
        REFUSED
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn print_list(page: &Value) {
    let rows: Vec<[String; 6]> = page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|job| {
            [
                text(&job["id"]),
                text(&job["provider"]),
                text(&job["status"]),
                text(&job["providerStatus"]),
                text(&job["group"]),
                text(&job["updatedAt"]),
            ]
        })
        .collect();
    let header = [
        "ID",
        "PROVIDER",
        "STATUS",
        "PROVIDER STATUS",
        "GROUP",
        "UPDATED",
    ]
    .map(str::to_owned);
    print_table(&header, &rows);
    if page["done"] == false {
        println!("(more: --json gives the iterator)");
    }
}

fn print_job(job: &Value) {
    for (label, field) in [
        ("id", "id"),
        ("uid", "uid"),
        ("provider", "provider"),
        ("provider job", "providerJobId"),
        ("app", "appId"),
        ("group", "group"),
        ("status", "status"),
        ("provider status", "providerStatus"),
        ("progress", "progress"),
        ("error", "error"),
        ("deadline", "deadline"),
        ("created", "createdAt"),
        ("updated", "updatedAt"),
    ] {
        println!("{label:<16}{}", text(&job[field]));
    }
    let rows: Vec<[String; 4]> = job["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            [
                text(&entry["at"]),
                text(&entry["source"]),
                text(&entry["providerStatus"]),
                text(&entry["status"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(
            &["AT", "SOURCE", "PROVIDER STATUS", "STATUS"].map(str::to_owned),
            &rows,
        );
    }
}

fn print_table<const N: usize>(header: &[String; N], rows: &[[String; N]]) {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row);
    }
}
