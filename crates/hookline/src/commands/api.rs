//! What the commands that drive a server's API share: where the server is and the token
//! to call it with, the call itself (a refusal printed with the API's code and detail),
//! and output as a table or as the API's own JSON.
//!
//! Exit codes: 0 done, 1 the server refused (its error code and detail are printed),
//! 2 bad usage, 3 the server could not be reached or failed.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use super::profile::{Server, Target};

/// The server refused the request.
pub const REFUSED: u8 = 1;
/// The server could not be reached, or failed (5xx).
pub const UNREACHABLE: u8 = 3;

/// The server, the token, and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    #[command(flatten)]
    pub target: Target,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What a call came to: the JSON answered, or the exit code of a failure already told.
pub type Outcome = Result<Value, u8>;

impl Connection {
    /// Runs `work` with this connection, after checking that there is a token.
    pub fn run<F, Fut>(&self, work: F) -> anyhow::Result<ExitCode>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<(), u8>>,
    {
        let server = self.target.resolve()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        let client = Client {
            server,
            json: self.json,
            http: reqwest::Client::new(),
        };
        Ok(match runtime.block_on(work(client)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => ExitCode::from(code),
        })
    }
}

/// Calls one server.
#[derive(Debug, Clone)]
pub struct Client {
    server: Server,
    json: bool,
    http: reqwest::Client,
}

impl Client {
    /// Calls `path` (from `/api/v1/…` or `/ingest/…`); a refusal or a failure is printed
    /// and answered as its exit code.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Outcome {
        self.call_keyed(method, path, body, None).await
    }

    /// [`Client::call`] with an `idempotency-key`, so that running it again does not do
    /// the work twice.
    pub async fn call_keyed(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Outcome {
        let server = &self.server.url;
        let mut request = self
            .http
            .request(method, format!("{server}{path}"))
            .bearer_auth(&self.server.token);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| {
            eprintln!("error: cannot reach {server}: {error}");
            UNREACHABLE
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|error| {
            eprintln!("error: the answer broke off: {error}");
            UNREACHABLE
        })?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        eprintln!(
            "error: {status} {}: {}",
            value["code"].as_str().unwrap_or("error"),
            detail(&value["detail"])
        );
        Err(if status.is_server_error() {
            UNREACHABLE
        } else {
            REFUSED
        })
    }

    /// Prints `value` as the API's JSON, or as `human` prints it.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("JSON serializes")
            );
        } else {
            human(value);
        }
    }
}

/// An error's `detail`: a sentence, or validation errors as `loc: msg; …`.
fn detail(detail: &Value) -> String {
    match detail {
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
    }
}

/// A value as a table cell: `-` for nothing, strings as they are, the rest as JSON.
/// Control characters are shown escaped: bodies and headers come from anyone who posts to
/// an ingest URL, and must not drive the terminal.
pub fn text(value: &Value) -> String {
    let text = match value {
        Value::Null => return "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| match c {
                '\n' => "\n".to_owned(),
                c if c.is_control() => c.escape_unicode().to_string(),
                c => c.to_string(),
            })
            .collect()
    } else {
        text
    }
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `?name=value&…` of the pairs that have a value (empty when none has).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", encode(value.as_ref()?))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Parses `--name` as a JSON object.
pub fn json_object(name: &str, text: &str) -> anyhow::Result<Value> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("--{name} must be a JSON object"))?;
    if !value.is_object() {
        bail!("--{name} must be a JSON object");
    }
    Ok(value)
}

/// Prints the rows of a list page under `columns` (header, field), and says when there
/// are more.
pub fn print_page(page: &Value, columns: &[(&str, &str)]) {
    let rows: Vec<Vec<String>> = page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, field)| text(&item[*field]))
                .collect()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
    print_table(&header, &rows);
    if page["done"] == false {
        println!(
            "(more: --iterator {})",
            page["iterator"].as_str().unwrap_or("-")
        );
    }
}

/// Prints one item as `label  value` lines.
pub fn print_fields(item: &Value, fields: &[(&str, &str)]) {
    for (label, field) in fields {
        println!("{label:<16}{}", text(&item[*field]));
    }
}

pub fn print_table(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row);
    }
}

/// Tells how far a long command got: a bar redrawn in place on a terminal, a plain line
/// per step otherwise (logs, pipes).
pub struct Progress {
    total: usize,
    done: usize,
    terminal: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One more step done, with what it did.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = WIDTH * self.done / self.total.max(1);
            eprint!(
                "\r[{}{}] {}/{} {what}\x1b[K",
                "#".repeat(filled),
                " ".repeat(WIDTH - filled),
                self.done,
                self.total
            );
            if self.done == self.total {
                eprintln!();
            }
        } else {
            eprintln!("{}/{} {what}", self.done, self.total);
        }
    }
}
