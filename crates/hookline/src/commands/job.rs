//! `hookline job list|get|create|cancel`: the job tracker's API from a terminal, as a
//! table or, with `--json`, as the API's own JSON.
//!
//! Exit codes: 0 done, 1 the server refused (its error code and detail are printed),
//! 2 bad usage, 3 the server could not be reached or failed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Connection, encode, print_fields, print_page, print_table, query, text};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    connection: Connection,
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
        #[command(flatten)]
        paging: super::resource::Paging,
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
        /// Makes the create safe to run again: the same key never registers (or submits)
        /// twice. A fresh one is made, and printed, when not given.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Cancel a job (at its provider too, where it has a cancel call).
    Cancel { job: String },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (method, path, body) = request(&args.command)?;
    let list = matches!(args.command, JobCommand::List { .. });
    let key = match &args.command {
        JobCommand::Create {
            idempotency_key, ..
        } => {
            let key = idempotency_key
                .clone()
                .unwrap_or_else(|| format!("cli-{}", hookline_core::id::MessageId::new().as_str()));
            eprintln!("idempotency-key: {key} (give it with --idempotency-key to retry safely)");
            Some(key)
        }
        _ => None,
    };
    args.connection.run(|client| async move {
        let value = client
            .call_keyed(method, &path, body, key.as_deref())
            .await?;
        client.show(&value, |value| {
            if list {
                print_page(value, JOB_COLUMNS);
            } else {
                print_job(value);
            }
        });
        Ok(())
    })
}

const JOB_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("PROVIDER", "provider"),
    ("STATUS", "status"),
    ("PROVIDER STATUS", "providerStatus"),
    ("GROUP", "group"),
    ("UPDATED", "updatedAt"),
];

/// The API call a command makes.
fn request(command: &JobCommand) -> anyhow::Result<(Method, String, Option<Value>)> {
    Ok(match command {
        JobCommand::List {
            app,
            provider,
            status,
            group,
            paging,
        } => {
            let [limit, iterator] = paging.pairs();
            let pairs = [
                limit,
                iterator,
                ("appId", app.clone()),
                ("provider", provider.clone()),
                ("status", status.clone()),
                ("group", group.clone()),
            ];
            (Method::GET, format!("/api/v1/job{}", query(&pairs)), None)
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
            idempotency_key: _,
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

fn print_job(job: &Value) {
    print_fields(
        job,
        &[
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
        ],
    );
    let rows: Vec<Vec<String>> = job["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            ["at", "source", "providerStatus", "status"]
                .iter()
                .map(|field| text(&entry[*field]))
                .collect()
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
