//! The resource commands: `hookline app|endpoint|msg|attempt|source|request …` (list, get,
//! create, update, delete where the API has them), and `hookline recover` and
//! `hookline replay` for time ranges. Each is one call of the public API (a range is
//! split into slices, to show progress), printed as a table or, with `--json`, as the
//! API's own JSON. Exit codes as in [`super::api`].

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{self, Client, Connection, encode, print_fields, print_page, query};

/// How a command's answer is printed as text.
enum Show {
    /// A list page under these columns (header, field).
    Page(&'static [(&'static str, &'static str)]),
    /// One item, these fields (label, field).
    Item(&'static [(&'static str, &'static str)]),
    /// A line saying what was done.
    Done(String),
}

/// One API call and how to print its answer.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    show: Show,
}

impl Call {
    fn get(path: String, show: Show) -> Self {
        Call {
            method: Method::GET,
            path,
            body: None,
            show,
        }
    }

    fn send(method: Method, path: String, body: Value, show: Show) -> Self {
        Call {
            method,
            path,
            body: Some(body),
            show,
        }
    }

    fn delete(path: String, what: String) -> Self {
        Call {
            method: Method::DELETE,
            path,
            body: None,
            show: Show::Done(format!("deleted {what}")),
        }
    }
}

/// Makes `call` with `connection` and prints the answer.
fn run(connection: &Connection, call: Call) -> anyhow::Result<ExitCode> {
    connection.run(|client| async move {
        let value = client.call(call.method, &call.path, call.body).await?;
        client.show(&value, |value| match &call.show {
            Show::Page(columns) => print_page(value, columns),
            Show::Item(fields) => print_fields(value, fields),
            Show::Done(what) => println!("{what}"),
        });
        Ok(())
    })
}

/// The paging flags of every list.
#[derive(Debug, clap::Args)]
pub struct Paging {
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Where the page starts: the iterator a previous page printed.
    #[arg(long)]
    iterator: Option<String>,
}

impl Paging {
    pub fn pairs(&self) -> [(&'static str, Option<String>); 2] {
        [
            ("limit", Some(self.limit.to_string())),
            ("iterator", self.iterator.clone()),
        ]
    }
}

/// Puts the flags given into a JSON body; `--metadata`-like flags as JSON objects.
fn body(
    strings: &[(&str, &Option<String>)],
    objects: &[(&str, &Option<String>)],
) -> anyhow::Result<Value> {
    let mut body = Map::new();
    for (name, value) in strings {
        if let Some(value) = value {
            body.insert((*name).into(), json!(value));
        }
    }
    for (name, text) in objects {
        if let Some(text) = text {
            body.insert((*name).into(), api::json_object(name, text)?);
        }
    }
    Ok(Value::Object(body))
}

/// A comma-separated list flag as a JSON array.
fn list(text: &str) -> Value {
    json!(
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    )
}

// ---------------------------------------------------------------------------------------
// Applications

#[derive(Debug, clap::Args)]
pub struct AppArgs {
    #[command(subcommand)]
    command: AppCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum AppCommand {
    /// List applications, newest first.
    List(Paging),
    /// Show one application (id or uid).
    Get { app: String },
    /// Create an application.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        uid: Option<String>,
        /// A JSON object of strings.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Change an application's name, uid or metadata.
    Update {
        app: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        uid: Option<String>,
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Delete an application with its endpoints and messages.
    Delete { app: String },
}

const APP_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("UID", "uid"),
    ("NAME", "name"),
    ("CREATED", "createdAt"),
];
const APP_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("uid", "uid"),
    ("name", "name"),
    ("metadata", "metadata"),
    ("created", "createdAt"),
    ("updated", "updatedAt"),
];

pub fn app(args: AppArgs) -> anyhow::Result<ExitCode> {
    let call = match args.command {
        AppCommand::List(paging) => Call::get(
            format!("/api/v1/app{}", query(&paging.pairs())),
            Show::Page(APP_COLUMNS),
        ),
        AppCommand::Get { app } => Call::get(
            format!("/api/v1/app/{}", encode(&app)),
            Show::Item(APP_FIELDS),
        ),
        AppCommand::Create {
            name,
            uid,
            metadata,
        } => Call::send(
            Method::POST,
            "/api/v1/app".into(),
            body(
                &[("name", &Some(name)), ("uid", &uid)],
                &[("metadata", &metadata)],
            )?,
            Show::Item(APP_FIELDS),
        ),
        AppCommand::Update {
            app,
            name,
            uid,
            metadata,
        } => Call::send(
            Method::PATCH,
            format!("/api/v1/app/{}", encode(&app)),
            body(
                &[("name", &name), ("uid", &uid)],
                &[("metadata", &metadata)],
            )?,
            Show::Item(APP_FIELDS),
        ),
        AppCommand::Delete { app } => Call::delete(
            format!("/api/v1/app/{}", encode(&app)),
            format!("application {app}"),
        ),
    };
    run(&args.connection, call)
}

// ---------------------------------------------------------------------------------------
// Endpoints

#[derive(Debug, clap::Args)]
pub struct EndpointArgs {
    #[command(subcommand)]
    command: EndpointCommand,
    /// The application (id or uid).
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum EndpointCommand {
    /// List the application's endpoints.
    List(Paging),
    /// Show one endpoint (id or uid).
    Get { endpoint: String },
    /// Create an endpoint.
    Create {
        #[arg(long)]
        url: String,
        #[arg(long)]
        uid: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Only these event types, comma-separated.
        #[arg(long)]
        event_types: Option<String>,
        /// Only these channels, comma-separated.
        #[arg(long)]
        channels: Option<String>,
        /// A JSON object of strings.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Change an endpoint; `--disabled true|false` turns it off or on.
    Update {
        endpoint: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        event_types: Option<String>,
        #[arg(long)]
        channels: Option<String>,
        #[arg(long)]
        disabled: Option<bool>,
    },
    /// Delete an endpoint.
    Delete { endpoint: String },
}

const ENDPOINT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("URL", "url"),
    ("DISABLED", "disabled"),
    ("EVENT TYPES", "eventTypes"),
    ("CREATED", "createdAt"),
];
const ENDPOINT_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("uid", "uid"),
    ("url", "url"),
    ("description", "description"),
    ("disabled", "disabled"),
    ("event types", "eventTypes"),
    ("channels", "channels"),
    ("throttle rate", "throttleRate"),
    ("metadata", "metadata"),
    ("created", "createdAt"),
    ("updated", "updatedAt"),
];

pub fn endpoint(args: EndpointArgs) -> anyhow::Result<ExitCode> {
    if args.app.is_empty() {
        bail!("--app is needed: the application whose endpoints these are");
    }
    let base = format!("/api/v1/app/{}/endpoint", encode(&args.app));
    let call = match args.command {
        EndpointCommand::List(paging) => Call::get(
            format!("{base}{}", query(&paging.pairs())),
            Show::Page(ENDPOINT_COLUMNS),
        ),
        EndpointCommand::Get { endpoint } => Call::get(
            format!("{base}/{}", encode(&endpoint)),
            Show::Item(ENDPOINT_FIELDS),
        ),
        EndpointCommand::Create {
            url,
            uid,
            description,
            event_types,
            channels,
            metadata,
        } => {
            let mut new = body(
                &[
                    ("url", &Some(url)),
                    ("uid", &uid),
                    ("description", &description),
                ],
                &[("metadata", &metadata)],
            )?;
            put_lists(&mut new, &event_types, &channels);
            Call::send(Method::POST, base, new, Show::Item(ENDPOINT_FIELDS))
        }
        EndpointCommand::Update {
            endpoint,
            url,
            description,
            event_types,
            channels,
            disabled,
        } => {
            let mut change = body(&[("url", &url), ("description", &description)], &[])?;
            put_lists(&mut change, &event_types, &channels);
            if let Some(disabled) = disabled {
                change["disabled"] = json!(disabled);
            }
            Call::send(
                Method::PATCH,
                format!("{base}/{}", encode(&endpoint)),
                change,
                Show::Item(ENDPOINT_FIELDS),
            )
        }
        EndpointCommand::Delete { endpoint } => Call::delete(
            format!("{base}/{}", encode(&endpoint)),
            format!("endpoint {endpoint}"),
        ),
    };
    run(&args.connection, call)
}

fn put_lists(body: &mut Value, event_types: &Option<String>, channels: &Option<String>) {
    if let Some(types) = event_types {
        body["filterTypes"] = list(types);
    }
    if let Some(channels) = channels {
        body["channels"] = list(channels);
    }
}

// ---------------------------------------------------------------------------------------
// Messages

#[derive(Debug, clap::Args)]
pub struct MsgArgs {
    #[command(subcommand)]
    command: MsgCommand,
    /// The application (id or uid).
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum MsgCommand {
    /// List the application's messages, newest first.
    List {
        #[command(flatten)]
        paging: Paging,
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        /// Only messages created before this time (RFC 3339).
        #[arg(long)]
        before: Option<String>,
        /// Only messages created after this time (RFC 3339).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one message (id or eventId) with its payload.
    Get { msg: String },
    /// Send a message: it goes to every endpoint that wants its event type.
    Create {
        #[arg(long)]
        event_type: String,
        /// The payload, a JSON object.
        #[arg(long)]
        payload: String,
        /// Makes the create idempotent: a second message with it is refused.
        #[arg(long)]
        event_id: Option<String>,
        #[arg(long)]
        channels: Option<String>,
    },
}

const MSG_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("EVENT TYPE", "eventType"),
    ("EVENT ID", "eventId"),
    ("CREATED", "timestamp"),
];
const MSG_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("event type", "eventType"),
    ("event id", "eventId"),
    ("channels", "channels"),
    ("created", "timestamp"),
    ("payload", "payload"),
];

pub fn msg(args: MsgArgs) -> anyhow::Result<ExitCode> {
    if args.app.is_empty() {
        bail!("--app is needed: the application whose messages these are");
    }
    let base = format!("/api/v1/app/{}/msg", encode(&args.app));
    let call = match args.command {
        MsgCommand::List {
            paging,
            event_type,
            channel,
            before,
            after,
        } => {
            let [limit, iterator] = paging.pairs();
            let pairs = [
                limit,
                iterator,
                ("event_types", event_type),
                ("channel", channel),
                ("before", before),
                ("after", after),
            ];
            Call::get(format!("{base}{}", query(&pairs)), Show::Page(MSG_COLUMNS))
        }
        MsgCommand::Get { msg } => {
            Call::get(format!("{base}/{}", encode(&msg)), Show::Item(MSG_FIELDS))
        }
        MsgCommand::Create {
            event_type,
            payload,
            event_id,
            channels,
        } => {
            let mut new = body(
                &[("eventType", &Some(event_type)), ("eventId", &event_id)],
                &[("payload", &Some(payload))],
            )?;
            if let Some(channels) = channels {
                new["channels"] = list(&channels);
            }
            Call::send(Method::POST, base, new, Show::Item(MSG_FIELDS))
        }
    };
    run(&args.connection, call)
}

// ---------------------------------------------------------------------------------------
// Attempts

#[derive(Debug, clap::Args)]
pub struct AttemptArgs {
    #[command(subcommand)]
    command: AttemptCommand,
    /// The application (id or uid).
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum AttemptCommand {
    /// List the attempts of a message, or to an endpoint.
    List {
        #[command(flatten)]
        paging: Paging,
        #[arg(
            long,
            required_unless_present = "endpoint",
            conflicts_with = "endpoint"
        )]
        msg: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        /// 0 success, 1 pending, 2 fail, 3 sending.
        #[arg(long)]
        status: Option<u8>,
    },
    /// Show one attempt with the endpoint's answer.
    Get {
        attempt: String,
        #[arg(long)]
        msg: String,
    },
    /// Send a message to an endpoint again.
    Resend {
        #[arg(long)]
        msg: String,
        #[arg(long)]
        endpoint: String,
    },
}

const ATTEMPT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("MESSAGE", "msgId"),
    ("ENDPOINT", "endpointId"),
    ("STATUS", "statusText"),
    ("HTTP", "responseStatusCode"),
    ("MS", "responseDurationMs"),
    ("AT", "timestamp"),
];
const ATTEMPT_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("message", "msgId"),
    ("endpoint", "endpointId"),
    ("url", "url"),
    ("status", "statusText"),
    ("http status", "responseStatusCode"),
    ("duration ms", "responseDurationMs"),
    ("trigger", "triggerType"),
    ("at", "timestamp"),
    ("response", "response"),
];

pub fn attempt(args: AttemptArgs) -> anyhow::Result<ExitCode> {
    if args.app.is_empty() {
        bail!("--app is needed: the application whose attempts these are");
    }
    let app = encode(&args.app);
    let call = match args.command {
        AttemptCommand::List {
            paging,
            msg,
            endpoint,
            status,
        } => {
            let [limit, iterator] = paging.pairs();
            let pairs = [limit, iterator, ("status", status.map(|s| s.to_string()))];
            let target = match (msg, endpoint) {
                (Some(msg), _) => format!("msg/{}", encode(&msg)),
                (None, Some(endpoint)) => format!("endpoint/{}", encode(&endpoint)),
                (None, None) => unreachable!("clap requires one"),
            };
            Call::get(
                format!("/api/v1/app/{app}/attempt/{target}{}", query(&pairs)),
                Show::Page(ATTEMPT_COLUMNS),
            )
        }
        AttemptCommand::Get { attempt, msg } => Call::get(
            format!(
                "/api/v1/app/{app}/msg/{}/attempt/{}",
                encode(&msg),
                encode(&attempt)
            ),
            Show::Item(ATTEMPT_FIELDS),
        ),
        AttemptCommand::Resend { msg, endpoint } => Call::send(
            Method::POST,
            format!(
                "/api/v1/app/{app}/msg/{}/endpoint/{}/resend",
                encode(&msg),
                encode(&endpoint)
            ),
            json!({}),
            Show::Done(format!("resending {msg} to {endpoint}")),
        ),
    };
    run(&args.connection, call)
}

// ---------------------------------------------------------------------------------------
// Sources and their requests

#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    command: SourceCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum SourceCommand {
    /// List sources.
    List(Paging),
    /// Show one source (id or uid) with its ingest URL.
    Get { source: String },
    /// Create a source: where a provider posts its webhooks.
    #[command(after_help = "\
Example:
  hookline source create --name OpenAI --type open-ai --config '{\"secret\":\"whsec_…\"}'")]
    Create {
        #[arg(long)]
        name: String,
        /// open-ai, replicate, standard-webhooks, github, stripe, slack, shopify, …
        #[arg(long = "type")]
        source_type: String,
        /// A JSON object: the type's secret and options.
        #[arg(long)]
        config: Option<String>,
        #[arg(long)]
        uid: Option<String>,
    },
    /// Change a source's name or configuration.
    Update {
        source: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        config: Option<String>,
    },
    /// Delete a source with its log and forwarding endpoints.
    Delete { source: String },
}

/// Not the ingest URL: its token is a credential (`get` shows it).
const SOURCE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("UID", "uid"),
    ("NAME", "name"),
    ("TYPE", "type"),
    ("CREATED", "createdAt"),
];
const SOURCE_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("uid", "uid"),
    ("name", "name"),
    ("type", "type"),
    ("ingest url", "ingestUrl"),
    ("config", "config"),
    ("created", "createdAt"),
];

pub fn source(args: SourceArgs) -> anyhow::Result<ExitCode> {
    let base = "/ingest/api/v1/source";
    let call = match args.command {
        SourceCommand::List(paging) => Call::get(
            format!("{base}{}", query(&paging.pairs())),
            Show::Page(SOURCE_COLUMNS),
        ),
        SourceCommand::Get { source } => Call::get(
            format!("{base}/{}", encode(&source)),
            Show::Item(SOURCE_FIELDS),
        ),
        SourceCommand::Create {
            name,
            source_type,
            config,
            uid,
        } => {
            let mut new = body(
                &[
                    ("name", &Some(name)),
                    ("type", &Some(source_type)),
                    ("uid", &uid),
                ],
                &[("config", &config)],
            )?;
            if config.is_none() {
                new["config"] = json!({});
            }
            Call::send(Method::POST, base.into(), new, Show::Item(SOURCE_FIELDS))
        }
        SourceCommand::Update {
            source,
            name,
            config,
        } => Call::send(
            Method::PATCH,
            format!("{base}/{}", encode(&source)),
            body(&[("name", &name)], &[("config", &config)])?,
            Show::Item(SOURCE_FIELDS),
        ),
        SourceCommand::Delete { source } => Call::delete(
            format!("{base}/{}", encode(&source)),
            format!("source {source}"),
        ),
    };
    run(&args.connection, call)
}

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    #[command(subcommand)]
    command: RequestCommand,
    /// The source (id or uid).
    #[arg(long, global = true, default_value = "")]
    source: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
enum RequestCommand {
    /// List the requests the source received, newest first, refused ones too.
    List(Paging),
    /// Show one request: verdict, reason, headers and body.
    Get { request: String },
    /// Forward an accepted request again to the endpoints it went to.
    Replay { request: String },
}

const REQUEST_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("VERDICT", "verdict"),
    ("REASON", "reasonCode"),
    ("HTTP", "status_code"),
    ("EVENT TYPE", "eventType"),
    ("RECEIVED", "created_at"),
];
const REQUEST_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("verdict", "verdict"),
    ("reason", "reasonCode"),
    ("why", "error_text"),
    ("answered", "status_code"),
    ("method", "method"),
    ("path", "path"),
    ("event type", "eventType"),
    ("forwarded as", "msgId"),
    ("received", "created_at"),
    ("headers", "headers"),
    ("body", "payload"),
];

pub fn request(args: RequestArgs) -> anyhow::Result<ExitCode> {
    if args.source.is_empty() {
        bail!("--source is needed: the source that received the requests");
    }
    let base = format!("/ingest/api/v1/source/{}", encode(&args.source));
    let call = match args.command {
        RequestCommand::List(paging) => Call::get(
            format!("{base}/log{}", query(&paging.pairs())),
            Show::Page(REQUEST_COLUMNS),
        ),
        RequestCommand::Get { request } => Call::get(
            format!("{base}/request/{}", encode(&request)),
            Show::Item(REQUEST_FIELDS),
        ),
        RequestCommand::Replay { request } => Call::send(
            Method::POST,
            format!("{base}/request/{}/replay", encode(&request)),
            json!({}),
            Show::Item(&[("forwarded as", "msgId"), ("deliveries", "deliveries")]),
        ),
    };
    run(&args.connection, call)
}

// ---------------------------------------------------------------------------------------
// Time ranges: recover and replay

/// Slices a long range is cut into, for progress.
const SLICES: u32 = 20;

#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    /// From this time (RFC 3339).
    #[arg(long)]
    since: String,
    /// Until this time (RFC 3339); now when not given.
    #[arg(long)]
    until: Option<String>,
}

impl RangeArgs {
    /// The range's ends.
    fn bounds(&self) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        let parse = |name: &str, text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| format!("--{name} must be an RFC 3339 time, got {text:?}"))
        };
        let since = parse("since", &self.since)?;
        let until = match &self.until {
            Some(text) => parse("until", text)?,
            None => Utc::now(),
        };
        if until < since {
            bail!("--until must not be before --since");
        }
        Ok((since, until))
    }

    /// The range cut into slices, each `[from, to]`.
    fn slices(&self) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
        let (since, until) = self.bounds()?;
        // Slices of whole milliseconds (the log's grain): a short range is one slice.
        let millis = (until - since).num_milliseconds();
        if millis < i64::from(SLICES) {
            return Ok(vec![(since, until)]);
        }
        let step = chrono::Duration::milliseconds(millis / i64::from(SLICES));
        Ok((0..SLICES)
            .map(|n| {
                let from = since + step * n as i32;
                let to = if n + 1 == SLICES {
                    until
                } else {
                    since + step * (n + 1) as i32
                };
                (from, to)
            })
            .collect())
    }
}

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The application (id or uid).
    #[arg(long)]
    app: String,
    /// Only this endpoint; every endpoint of the application when not given.
    #[arg(long)]
    endpoint: Option<String>,
    #[command(flatten)]
    range: RangeArgs,
    #[command(flatten)]
    connection: Connection,
}

/// `hookline recover`: sends again every failed delivery of the range's messages, one
/// endpoint after another.
pub fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let (since, until) = args.range.bounds()?;
    let app = encode(&args.app);
    args.connection.run(|client| async move {
        let endpoints = match args.endpoint {
            Some(endpoint) => vec![endpoint],
            None => all_endpoints(&client, &app).await?,
        };
        let mut progress = api::Progress::new(endpoints.len());
        let mut answers = Vec::new();
        for endpoint in endpoints {
            let answer = client
                .call(
                    Method::POST,
                    &format!("/api/v1/app/{app}/endpoint/{}/recover", encode(&endpoint)),
                    Some(json!({"since": since.to_rfc3339(), "until": until.to_rfc3339()})),
                )
                .await?;
            progress.step(&format!("recovered {endpoint}"));
            answers.push(json!({"endpoint": endpoint, "recover": answer}));
        }
        let summary = json!({ "endpoints": answers.len(), "results": answers });
        client.show(&summary, |summary| {
            println!(
                "recovered the failed deliveries of {} endpoint(s)",
                summary["endpoints"]
            );
        });
        Ok(())
    })
}

/// Every endpoint id of an application, through all pages.
async fn all_endpoints(client: &Client, app: &str) -> Result<Vec<String>, u8> {
    let mut ids = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let pairs = [
            ("limit", Some("250".into())),
            ("iterator", iterator.clone()),
        ];
        let page = client
            .call(
                Method::GET,
                &format!("/api/v1/app/{app}/endpoint{}", query(&pairs)),
                None,
            )
            .await?;
        for endpoint in page["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            ids.extend(endpoint["id"].as_str().map(str::to_owned));
        }
        match page["iterator"].as_str() {
            Some(next) if page["done"] == false => iterator = Some(next.to_owned()),
            _ => return Ok(ids),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The source (id or uid).
    #[arg(long)]
    source: String,
    #[command(flatten)]
    range: RangeArgs,
    #[command(flatten)]
    connection: Connection,
}

/// `hookline replay`: forwards again every accepted request the source received in the
/// range, slice by slice.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let slices = args.range.slices()?;
    let path = format!("/ingest/api/v1/source/{}/replay", encode(&args.source));
    args.connection.run(|client| async move {
        let mut progress = api::Progress::new(slices.len());
        let (mut replayed, mut deliveries, mut skipped) = (0, 0, 0);
        let mut last: Option<DateTime<Utc>> = None;
        for (from, to) in slices {
            // Slices meet at their ends: a request at a boundary belongs to the first.
            let from = last.map_or(from, |end| end + chrono::Duration::milliseconds(1));
            last = Some(to);
            if from > to {
                progress.step("nothing");
                continue;
            }
            // A call looks at a bounded number of requests; its iterator goes on.
            let mut iterator = Value::Null;
            loop {
                let answer = client
                    .call(
                        Method::POST,
                        &path,
                        Some(json!({"since": from.to_rfc3339(), "until": to.to_rfc3339(),
                                    "iterator": iterator})),
                    )
                    .await?;
                let count = |name: &str| answer[name].as_u64().unwrap_or(0);
                replayed += count("replayed");
                deliveries += count("deliveries");
                skipped += count("skipped");
                if answer["done"] != false {
                    break;
                }
                iterator = answer["iterator"].clone();
            }
            progress.step(&format!("{replayed} replayed"));
        }
        let summary = json!({"replayed": replayed, "deliveries": deliveries, "skipped": skipped});
        client.show(&summary, |_| {
            println!(
                "replayed {replayed} request(s) as {deliveries} deliveries; \
                 {skipped} not replayed (refused, duplicates, or expired)"
            );
        });
        Ok(())
    })
}
