//! `hookline-bench`: Hookline end to end on loopback, next to the ceiling of the same
//! machine in the same run.
//!
//! It starts a fast receiver, measures the ceiling (the load generator posting straight to
//! the receiver), then starts `hookline serve` on a fresh SQLite file, creates an app and
//! an endpoint through the API, sends N messages at concurrency C and reports: messages
//! accepted per second, p50/p99 create latency, deliveries per second end to end, p50/p99
//! create-to-delivery latency, the server's peak RSS, the CPU the messages cost (the
//! servers', and the whole machine's from `/proc/stat`: deliveries per machine CPU-second,
//! the figure that still means something when several nodes share the cores) and the bytes
//! they cost on disk. Optional phases measure fan-out to 100 endpoints (with the same CPU
//! figures per delivery), the receiving side (signed OpenAI `realtime.call.incoming`
//! webhooks of `--payload-bytes` posted to a source, accepted and forwarded to its
//! endpoint) and memory while a large backlog drains.
//!
//! Every figure goes through a [`Report`]: printed as a table, and with `--json PATH` written
//! with the run's settings and commit so that runs can be compared.
//!
//! ```sh
//! cargo build --release -p hookline -p hookline-bench
//! target/release/hookline-bench --messages 20000 --concurrency 32 --json /tmp/bench.json
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};

const TOKEN: &str = "hookline-bench-admin-token";

#[derive(Debug, Parser)]
#[command(about = "Load harness for Hookline: end to end, next to the direct ceiling")]
struct Args {
    /// Messages to send in the main phase.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Messages for the fan-out phase (each to 100 endpoints); 0 skips it.
    #[arg(long, default_value_t = 500)]
    fanout_messages: usize,
    /// Inbound webhooks for the receiving phase (an `open-ai` source); 0 skips it.
    #[arg(long, default_value_t = 0)]
    ingest: usize,
    /// Jobs in flight for the job tracker's phase (OpenAI batches polled at a local
    /// emulator); 0 skips it. With `--messages 0`, only this phase runs.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Seconds the job phase watches the polls of the jobs in flight.
    #[arg(long, default_value_t = 20)]
    jobs_window: u64,
    /// Backlog size for the memory phase; 0 skips it.
    #[arg(long, default_value_t = 0)]
    backlog: usize,
    /// Payload padding in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// The hookline binary to run.
    #[arg(long, default_value = "target/release/hookline")]
    server_bin: PathBuf,
    /// A PostgreSQL URL to run on instead of a fresh SQLite file; a fresh schema is made in
    /// it (with `psql`) and dropped afterwards.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Hookline nodes sharing the database (PostgreSQL only); creates go round-robin.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Seconds to wait for every delivery before giving up.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Also write the run (its settings, the commit and every figure) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With PostgreSQL: run `VACUUM (ANALYZE)` on the bench's tables every this many
    /// seconds while the nodes run, standing in for autovacuum where the server has it off
    /// (the bench says so); 0 never does.
    #[arg(long, default_value_t = 0)]
    pg_vacuum_every: u64,
    /// With SQLite: after the main phase, copy the database and its `-wal` file into this
    /// directory (as `bench.db`), for `scripts/sqlite-pages` to say where their bytes are.
    #[arg(long)]
    copy_database: Option<PathBuf>,
}

/// What the receiver saw: arrivals by sequence number.
struct Receiver {
    base: Instant,
    /// When each sequence number's create request started (nanoseconds after `base`).
    started: Vec<AtomicU64>,
    /// When each sequence number first arrived (0 = not yet).
    arrived: Vec<AtomicU64>,
    unique: AtomicUsize,
    total: AtomicUsize,
}

impl Receiver {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            started: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            arrived: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        })
    }

    fn nanos(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn reset(&self) {
        for slot in self.started.iter().chain(&self.arrived) {
            slot.store(0, Ordering::Relaxed);
        }
        self.unique.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
    }

    fn record(&self, body: &[u8]) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let Some(seq) = sequence(body) else { return };
        let Some(slot) = self.arrived.get(seq) else {
            return;
        };
        if slot
            .compare_exchange(0, self.nanos().max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.unique.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Create-to-delivery latencies of the first `n` sequence numbers that arrived.
    fn latencies(&self, n: usize) -> Vec<Duration> {
        (0..n)
            .filter_map(|i| {
                let arrived = self.arrived[i].load(Ordering::Relaxed);
                let started = self.started[i].load(Ordering::Relaxed);
                (arrived > 0 && started > 0)
                    .then(|| Duration::from_nanos(arrived.saturating_sub(started)))
            })
            .collect()
    }
}

/// Finds `"seq":N` at the start of the payload without a full JSON parse.
fn sequence(body: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"seq\":")? + 6;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> &'static str {
    receiver.record(&body);
    "ok"
}

fn payload(seq: usize, pad: &str) -> Value {
    json!({ "seq": seq, "pad": pad })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a figure counts; its name in the JSON and its column in the table.
#[derive(Debug, Clone, Copy)]
enum Unit {
    PerSecond,
    PerCpuSecond,
    Millis,
    Micros,
    Seconds,
    CpuSeconds,
    MiB,
    Bytes,
    Count,
    Percent,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::PerSecond => "1/s",
            Self::PerCpuSecond => "1/cpu-s",
            Self::Millis => "ms",
            Self::Micros => "us",
            Self::Seconds => "s",
            Self::CpuSeconds => "cpu-s",
            Self::MiB => "MiB",
            Self::Bytes => "B",
            Self::Count => "count",
            Self::Percent => "%",
        }
    }

    /// The value column, 14 characters wide.
    fn format(self, value: f64) -> String {
        match self {
            Self::PerSecond => format!("{value:>12.0}/s"),
            Self::PerCpuSecond => format!("{value:>8.0}/CPU-s"),
            Self::Millis => format!("{:>14}", format!("{value:.2} ms")),
            Self::Micros => format!("{value:>11.1} us"),
            Self::Seconds => format!("{value:>12.1} s"),
            Self::CpuSeconds => format!("{value:>8.2} CPU-s"),
            Self::MiB => format!("{value:>10.1} MiB"),
            Self::Bytes => format!("{value:>12.0} B"),
            Self::Count if value.fract() == 0.0 => format!("{value:>14.0}"),
            Self::Count => format!("{value:>14.1}"),
            Self::Percent => format!("{value:>12.1} %"),
        }
    }
}

/// One figure of the run.
#[derive(Debug)]
struct Figure {
    phase: &'static str,
    name: String,
    value: f64,
    unit: Unit,
    ratio_to_ceiling: Option<f64>,
}

/// Every figure of the run: printed as a table row when it is added, kept for `--json`.
#[derive(Debug, Default)]
struct Report {
    figures: Vec<Figure>,
    header_printed: bool,
    /// The PostgreSQL server's settings that move the figures, when the run used one.
    postgres: Option<Value>,
}

impl Report {
    fn add(
        &mut self,
        phase: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: Unit,
        ratio_to_ceiling: Option<f64>,
    ) {
        let name = name.into();
        if !self.header_printed {
            println!();
            println!("{:<44} {:>14} {:>10}", "figure", "value", "/ceiling");
            self.header_printed = true;
        }
        let ratio = ratio_to_ceiling.map_or(String::new(), |ratio| format!("{ratio:.3}"));
        let line = format!("{name:<44} {} {ratio:>10}", unit.format(value));
        println!("{}", line.trim_end());
        self.figures.push(Figure {
            phase,
            name,
            value,
            unit,
            ratio_to_ceiling,
        });
    }

    /// The whole run: the settings that matter, the commit, every figure, and the error
    /// that ended it early, if one did.
    fn to_json(&self, args: &Args, error: Option<&anyhow::Error>) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|figure| {
                json!({
                    "phase": figure.phase,
                    "name": figure.name,
                    "value": figure.value,
                    "unit": figure.unit.as_str(),
                    "ratio_to_ceiling": figure.ratio_to_ceiling,
                })
            })
            .collect();
        let git = |git_args: &[&str]| {
            Command::new("git")
                .args(git_args)
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]);
        let dirty = commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|changes| !changes.is_empty());
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        json!({
            "tool": "hookline-bench",
            "unix_time": unix_time,
            "git_commit": commit,
            "git_dirty": dirty,
            "args": {
                "backend": if args.postgres_url.is_some() { "postgresql" } else { "sqlite" },
                "nodes": args.nodes,
                "messages": args.messages,
                "concurrency": args.concurrency,
                "payload_bytes": args.payload_bytes,
                "fanout_messages": args.fanout_messages,
                "ingest": args.ingest,
                "backlog": args.backlog,
                "jobs": args.jobs,
                "jobs_window": args.jobs_window,
                "server_bin": args.server_bin.display().to_string(),
                // The commit above is the working tree's; this tells an older binary.
                "server_bin_modified_unix": std::fs::metadata(&args.server_bin)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|at| at.as_secs()),
                "pg_vacuum_every": args.pg_vacuum_every,
            },
            "machine": { "cores": machine_cores() },
            "postgres": self.postgres,
            "figures": figures,
            "error": error.map(|error| format!("{error:#}")),
        })
    }
}

/// Sends `count` requests made by `make` at `concurrency`; returns each one's latency and
/// the wall time. Any non-2xx answer fails the run.
async fn load<F>(
    client: &reqwest::Client,
    count: usize,
    concurrency: usize,
    receiver: &Arc<Receiver>,
    make: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (make, next, receiver) = (Arc::clone(&make), Arc::clone(&next), Arc::clone(receiver));
        let _ = client;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= count {
                    break;
                }
                if let Some(slot) = receiver.started.get(seq) {
                    slot.store(receiver.nanos().max(1), Ordering::Relaxed);
                }
                let t0 = Instant::now();
                let response = make(seq).send().await?;
                let status = response.status();
                response.bytes().await?;
                if !status.is_success() {
                    bail!("request {seq} answered {status}");
                }
                latencies.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

struct Server {
    child: Child,
    url: String,
    /// Removed once the server has ended.
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_server(
    bin: &PathBuf,
    database_url: &str,
    role: &str,
) -> anyhow::Result<(Child, String)> {
    start_server_with(bin, database_url, role, &[]).await
}

/// [`start_server`] with more `HOOKLINE_*` settings.
async fn start_server_with(
    bin: &PathBuf,
    database_url: &str,
    role: &str,
    extra: &[(String, String)],
) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(bin)
        .arg("serve")
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATABASE_URL", database_url)
        .env("HOOKLINE_ADMIN_TOKEN", TOKEN)
        .env("HOOKLINE_ALLOWED_SUBNETS", "127.0.0.0/8")
        .env("HOOKLINE_LOG_LEVEL", "warn")
        .env("HOOKLINE_ROLE", role)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {} (build it with --release)", bin.display()))?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{url}/api/v1/health")).send().await
            && response.status().is_success()
        {
            return Ok((child, url));
        }
        if Instant::now() > deadline {
            bail!("hookline did not become healthy at {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh schema `{prefix}_{pid}` in the PostgreSQL database at `url`, and a URL whose
/// connections use it.
fn fresh_schema(url: &str, prefix: &str) -> anyhow::Result<(String, String)> {
    let schema = format!("{prefix}_{}", std::process::id());
    psql(
        url,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok((
        format!("{url}{separator}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

/// The PostgreSQL server's version and the settings that move the figures, as JSON; says
/// so when autovacuum is off: then nothing analyzes the bench's fresh tables, and the
/// planner plans the queue's queries for empty tables however full they get.
fn postgres_settings(url: &str) -> anyhow::Result<Value> {
    let names = [
        "autovacuum",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "shared_buffers",
        "max_wal_size",
    ];
    let rows = psql_value(
        url,
        &format!(
            "SELECT name || '=' || current_setting(name) FROM pg_settings \
             WHERE name IN ({}) ORDER BY name",
            names.map(|name| format!("'{name}'")).join(", ")
        ),
    )?;
    let mut settings = serde_json::Map::new();
    settings.insert(
        "version".into(),
        psql_value(url, "SHOW server_version")?.into(),
    );
    for row in rows.lines() {
        if let Some((name, value)) = row.split_once('=') {
            settings.insert(name.into(), value.into());
        }
    }
    if settings.get("autovacuum").and_then(Value::as_str) == Some("off") {
        println!(
            "note: autovacuum is off on this PostgreSQL server: the bench's tables are never \
             analyzed (--pg-vacuum-every SECS stands in for it)"
        );
    }
    Ok(Value::Object(settings))
}

/// A task stopped when this is dropped, however the phase that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `VACUUM (ANALYZE)` on the tables of `schema` every `every`, until aborted.
async fn vacuum_every(url: String, schema: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let (url, schema) = (url.clone(), schema.clone());
        let done = tokio::task::spawn_blocking(move || {
            let tables = psql_value(
                &url,
                &format!(
                    "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') \
                     FROM pg_tables WHERE schemaname = '{schema}'"
                ),
            )?;
            psql(&url, &format!("VACUUM (ANALYZE) {tables}"))
        })
        .await;
        if let Ok(Err(error)) = done {
            eprintln!("hookline-bench: VACUUM (ANALYZE) failed: {error:#}");
        }
    }
}

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The single value a query answers, as text.
fn psql_value(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([url, "-X", "-q", "-A", "-t", "-c", sql])
        .stderr(Stdio::piped())
        .output()
        .context("cannot run psql")?;
    if !output.status.success() {
        bail!(
            "psql failed: {sql}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let status = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run psql")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

/// Peak and current resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The bytes process `pid` has had written to storage so far (`write_bytes` of
/// `/proc/PID/io`: what reaches the disk, not what goes to sockets); 0 if unreadable.
fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .unwrap_or(0)
}

/// Copies the SQLite database at `path` and its `-wal` file into the directory `into`. The
/// server is idle by then but for its checkpoints, which copy pages the `-wal` copy holds
/// too, so a reader of the copies sees the database as its last commit left it.
fn copy_database(path: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let name = path.file_name().context("the database has no file name")?;
    let copy = into.join(name);
    std::fs::copy(sqlite_wal_path(path), sqlite_wal_path(&copy))?;
    std::fs::copy(path, &copy)?;
    println!("database copied to {}", copy.display());
    Ok(())
}

/// The `-wal` file beside the SQLite database at `path`.
fn sqlite_wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// The size in bytes of the SQLite database at `path` as its last commit left it, in pages
/// times the page size: what the rows and indexes take, wherever their pages are now. Pages
/// not yet checkpointed live in the `-wal` file, whose last commit frame of the current
/// generation (its salts match the header's) gives the page count; with none, the database
/// file's header does. The file's own size says neither: it grows only at checkpoints.
fn sqlite_database_size(path: &Path, wal: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let be32 = |bytes: &[u8], at: usize| {
        u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
    };
    let mut header = [0u8; 100];
    std::fs::File::open(path)?.read_exact_at(&mut header, 0)?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size => u64::from(size),
    };
    let mut pages = u64::from(be32(&header, 28));
    if let Ok(file) = std::fs::File::open(wal) {
        let mut wal_header = [0u8; 32];
        if file.read_exact_at(&mut wal_header, 0).is_ok() {
            let frame = 24 + u64::from(be32(&wal_header, 8));
            let salts = &wal_header[16..24];
            let mut frame_header = [0u8; 24];
            let mut at = 32;
            while file.read_exact_at(&mut frame_header, at).is_ok() && &frame_header[8..16] == salts
            {
                let committed = be32(&frame_header, 4);
                if committed > 0 {
                    pages = u64::from(committed);
                }
                at += frame;
            }
        }
    }
    Ok(pages * page_size)
}

/// CPU seconds (user and system) that process `pid` has used so far; 0 if unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_seconds(&stat, false)
}

/// The CPU seconds in a `/proc/PID/stat` line: fields 14 and 15 (user and system), and with
/// `children` 16 and 17 too (the children it waited for), counted after the command name,
/// which may hold spaces; in clock ticks, which Linux fixes at 100 a second for user space.
fn stat_cpu_seconds(stat: &str, children: bool) -> f64 {
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after_name
        .split_whitespace()
        .skip(11) // state is field 3; utime is field 14
        .take(if children { 4 } else { 2 })
        .filter_map(|field| field.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// CPU seconds the whole machine has spent busy since boot, every process and the kernel
/// (the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq and steal; idle and
/// iowait are not busy), and of those the interrupts' (irq and softirq: loopback traffic
/// is mostly softirq, which no process is charged with); 0 if unreadable.
fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let tick = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let interrupts = tick(5) + tick(6);
    (
        (tick(0) + tick(1) + tick(2) + interrupts + tick(7)) / 100.0,
        interrupts / 100.0,
    )
}

/// The CPUs `/proc/stat` counts (its `cpuN` lines).
fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        })
        .count()
        .max(1)
}

/// CPU seconds of every `postgres` process on this machine, with the children they waited
/// for (so backends that ended in between still count, in the postmaster's).
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .map(|stat| stat_cpu_seconds(&stat, true))
        .sum()
}

/// CPU used so far, by whom, at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    machine: f64,
    interrupts: f64,
    servers: f64,
    bench: f64,
    postgres: f64,
}

impl CpuMark {
    fn now(pids: &[u32]) -> Self {
        let (machine, interrupts) = machine_cpu_seconds();
        Self {
            at: Instant::now(),
            machine,
            interrupts,
            servers: pids.iter().map(|&pid| cpu_seconds(pid)).sum(),
            bench: stat_cpu_seconds(
                &std::fs::read_to_string("/proc/self/stat").unwrap_or_default(),
                false,
            ),
            postgres: postgres_cpu_seconds(),
        }
    }
}

/// The CPU figures of a phase that delivered `count` (messages or deliveries) between
/// `before` and `after`: the servers' CPU per item (summed over nodes), PostgreSQL's, the
/// bench's own (its load generator and receiver) and every other process's, the machine's
/// CPU seconds (and those in interrupts) and how busy its cores were, and items per machine
/// CPU-second, next to the ceiling's (direct posts per machine CPU-second).
#[allow(clippy::too_many_arguments)]
fn report_cpu(
    report: &mut Report,
    phase: &'static str,
    prefix: &str,
    (item, items): (&str, &str),
    count: usize,
    (before, after): (CpuMark, CpuMark),
    postgres: bool,
    ceiling_per_cpu: f64,
) {
    let count = count.max(1) as f64;
    let machine = after.machine - before.machine;
    let servers = after.servers - before.servers;
    let bench = after.bench - before.bench;
    let pg = if postgres {
        after.postgres - before.postgres
    } else {
        0.0
    };
    let interrupts = after.interrupts - before.interrupts;
    // Interrupts are not subtracted: without IRQ_TIME_ACCOUNTING the softirq work done
    // while a process ran is in that process's time too.
    let other = (machine - servers - bench - pg).max(0.0);
    let per = |cpu: f64| cpu * 1e6 / count;
    report.add(
        phase,
        format!("{prefix}server CPU per {item} (all nodes)"),
        per(servers),
        Unit::Micros,
        None,
    );
    if postgres {
        report.add(
            phase,
            format!("{prefix}PostgreSQL CPU per {item}"),
            per(pg),
            Unit::Micros,
            None,
        );
    }
    report.add(
        phase,
        format!("{prefix}bench's own CPU per {item}"),
        per(bench),
        Unit::Micros,
        None,
    );
    report.add(
        phase,
        format!("{prefix}other processes' CPU per {item}"),
        per(other),
        Unit::Micros,
        None,
    );
    report.add(
        phase,
        format!("{prefix}machine CPU-seconds (/proc/stat)"),
        machine,
        Unit::CpuSeconds,
        None,
    );
    report.add(
        phase,
        format!("{prefix}  of which irq/softirq (loopback I/O)"),
        interrupts,
        Unit::CpuSeconds,
        None,
    );
    let wall = after.at.duration_since(before.at).as_secs_f64();
    report.add(
        phase,
        format!("{prefix}machine CPU busy ({} cores)", machine_cores()),
        100.0 * machine / (wall * machine_cores() as f64),
        Unit::Percent,
        None,
    );
    let per_cpu = count / machine.max(0.01);
    report.add(
        phase,
        format!("{prefix}{items} per machine CPU-second"),
        per_cpu,
        Unit::PerCpuSecond,
        Some(per_cpu / ceiling_per_cpu),
    );
}

/// Where the messages are stored, to measure what they cost on disk.
#[derive(Debug)]
enum Storage {
    /// The SQLite file (its `-wal` file is next to it).
    Sqlite(PathBuf),
    /// The PostgreSQL server and the bench's schema in it.
    Postgres { url: String, schema: String },
}

/// Bytes on disk at one moment: the data (SQLite's file, or the total size of the bench
/// schema's tables with their indexes and TOAST) and the WAL (SQLite's `-wal` file's size,
/// or PostgreSQL's current WAL position, whose difference is the WAL written); with SQLite
/// also the database's own size (its pages as the last commit left them, wherever they
/// are) and the bytes the servers have written to storage; with PostgreSQL the database's
/// transactions and rows read so far (`pg_stat_database`).
#[derive(Debug, Clone, Default)]
struct DiskMark {
    data: u64,
    wal: u64,
    pages: u64,
    written: u64,
    lsn: Option<String>,
    transactions: u64,
    rows_read: u64,
}

impl Storage {
    fn mark(&self, pids: &[u32]) -> anyhow::Result<DiskMark> {
        match self {
            Self::Sqlite(path) => {
                let size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
                let wal = sqlite_wal_path(path);
                Ok(DiskMark {
                    data: size(path),
                    wal: size(&wal),
                    pages: sqlite_database_size(path, &wal)?,
                    written: pids.iter().map(|&pid| written_bytes(pid)).sum(),
                    ..DiskMark::default()
                })
            }
            Self::Postgres { url, schema } => {
                let data = psql_value(
                    url,
                    &format!(
                        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'm')"
                    ),
                )?
                .parse()
                .context("pg_total_relation_size")?;
                let activity = psql_value(
                    url,
                    "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched \
                     FROM pg_stat_database WHERE datname = current_database()",
                )?;
                let (transactions, rows_read) = activity
                    .split_once('|')
                    .and_then(|(t, r)| Some((t.parse().ok()?, r.parse().ok()?)))
                    .context("pg_stat_database")?;
                Ok(DiskMark {
                    data,
                    lsn: Some(psql_value(url, "SELECT pg_current_wal_lsn()")?),
                    transactions,
                    rows_read,
                    ..DiskMark::default()
                })
            }
        }
    }

    /// The bytes per message between `before` and now, next to the payload's size.
    fn report(
        &self,
        report: &mut Report,
        before: &DiskMark,
        pids: &[u32],
        messages: usize,
        payload_size: usize,
    ) -> anyhow::Result<()> {
        let after = self.mark(pids)?;
        let per = |bytes: f64| bytes / messages.max(1) as f64;
        let growth = |after: u64, before: u64| after as f64 - before as f64;
        report.add(
            "main",
            "payload per message (JSON, as created)",
            payload_size as f64,
            Unit::Bytes,
            None,
        );
        match self {
            Self::Sqlite(_) => {
                let (data, wal) = (
                    growth(after.data, before.data),
                    growth(after.wal, before.wal),
                );
                report.add(
                    "main",
                    "stored per message: the database's pages",
                    per(growth(after.pages, before.pages)),
                    Unit::Bytes,
                    None,
                );
                report.add(
                    "main",
                    "written per message: WAL and checkpoints",
                    per(growth(after.written, before.written)),
                    Unit::Bytes,
                    None,
                );
                report.add(
                    "main",
                    "on disk per message: SQLite file + -wal",
                    per(data + wal),
                    Unit::Bytes,
                    None,
                );
                report.add(
                    "main",
                    "  of which the database file's growth",
                    per(data),
                    Unit::Bytes,
                    None,
                );
                report.add(
                    "main",
                    "  of which the -wal file's growth",
                    per(wal),
                    Unit::Bytes,
                    None,
                );
            }
            Self::Postgres { url, .. } => {
                report.add(
                    "main",
                    "on disk per message: tables + indexes",
                    per(growth(after.data, before.data)),
                    Unit::Bytes,
                    None,
                );
                let (Some(from), Some(to)) = (&before.lsn, &after.lsn) else {
                    bail!("no WAL position");
                };
                let wal: f64 =
                    psql_value(url, &format!("SELECT pg_wal_lsn_diff('{to}', '{from}')"))?
                        .parse()
                        .context("pg_wal_lsn_diff")?;
                report.add(
                    "main",
                    "WAL written per message (whole cluster)",
                    per(wal),
                    Unit::Bytes,
                    None,
                );
                // Not bytes, but read from the same place at the same moments: what the
                // database did per message (how many claims came up empty, how much the
                // plans scan).
                report.add(
                    "main",
                    "PostgreSQL transactions per message",
                    per(growth(after.transactions, before.transactions)),
                    Unit::Count,
                    None,
                );
                report.add(
                    "main",
                    "PostgreSQL rows read per message",
                    per(growth(after.rows_read, before.rows_read)),
                    Unit::Count,
                    None,
                );
            }
        }
        Ok(())
    }
}

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .request(method, &url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The sum over `nodes` of the series `name` of their `/metrics` (every label set).
async fn scrape(client: &reqwest::Client, nodes: &[Server], name: &str) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for node in nodes {
        let text = client
            .get(format!("{}/metrics", node.url))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if rest.starts_with(' ') || rest.starts_with('{') {
                let value = rest.rsplit(' ').next().unwrap_or_default();
                sum += value.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(sum)
}

/// What the delivery workers of `nodes` have done so far: claims, deliveries given back
/// (by claims and hand-overs), group commits (SQLite's writer; PostgreSQL counts its
/// message creates, received requests and job writes), and deliveries handed over as
/// their messages were created.
#[derive(Debug, Clone, Copy)]
struct ClaimCounts([f64; 5]);

impl ClaimCounts {
    async fn now(client: &reqwest::Client, nodes: &[Server]) -> anyhow::Result<Self> {
        Ok(ClaimCounts([
            scrape(client, nodes, "hookline_claims_total").await?,
            scrape(
                client,
                nodes,
                "hookline_claimed_deliveries_total{fate=\"given_back\"}",
            )
            .await?,
            scrape(client, nodes, "hookline_commit_batch_size_count").await?,
            scrape(
                client,
                nodes,
                "hookline_handed_deliveries_total{fate=\"started\"}",
            )
            .await?,
            scrape(
                client,
                nodes,
                "hookline_handed_deliveries_total{fate=\"given_back\"}",
            )
            .await?,
        ]))
    }

    /// Reports each count per 100 of the phase's `deliveries` since `before`: counts that
    /// stay put from run to run where rates do not.
    fn report(
        self,
        before: Self,
        report: &mut Report,
        (phase, prefix): (&'static str, &str),
        deliveries: usize,
        postgres: bool,
    ) {
        let per_100 = |at: usize| (self.0[at] - before.0[at]) * 100.0 / deliveries.max(1) as f64;
        let mut figures = vec![
            ("claims per 100 deliveries", per_100(0)),
            ("handed over at create per 100 deliveries", per_100(3)),
            ("given back per 100 deliveries", per_100(1) + per_100(4)),
        ];
        if !postgres {
            figures.push(("SQLite commits per 100 deliveries", per_100(2)));
        }
        for (name, value) in figures {
            report.add(phase, format!("{prefix}{name}"), value, Unit::Count, None);
        }
    }
}

async fn create_app_with_endpoints(
    client: &reqwest::Client,
    server: &str,
    receiver_url: &str,
    endpoints: usize,
) -> anyhow::Result<String> {
    let app = api(
        client,
        reqwest::Method::POST,
        format!("{server}/api/v1/app"),
        json!({"name": "bench"}),
    )
    .await?;
    let app_id = app["id"].as_str().context("app id")?.to_owned();
    for k in 0..endpoints {
        api(
            client,
            reqwest::Method::POST,
            format!("{server}/api/v1/app/{app_id}/endpoint"),
            json!({"url": format!("{receiver_url}/hook/{k}")}),
        )
        .await?;
    }
    Ok(app_id)
}

async fn wait_for(
    receiver: &Receiver,
    expected: usize,
    timeout: Duration,
    unique: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let seen = if unique {
            receiver.unique.load(Ordering::Relaxed)
        } else {
            receiver.total.load(Ordering::Relaxed)
        };
        if seen >= expected {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("only {seen} of {expected} deliveries arrived within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.json {
        // Fail now rather than after the run.
        std::fs::write(path, "")
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    let mut report = Report::default();
    let result = run(&args, &mut report).await;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json(&args, result.as_ref().err()))?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    result
}

async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    if args.messages == 0 {
        if args.jobs == 0 {
            bail!("nothing to measure: give --messages or --jobs");
        }
        return jobs_phase(args, report, timeout).await;
    }
    let capacity = args
        .messages
        .max(args.fanout_messages)
        .max(args.backlog)
        .max(args.ingest);
    let receiver = Receiver::new(capacity);
    let app = axum::Router::new()
        .route("/hook/{k}", post(receive))
        .route("/direct", post(receive))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let pad = "x".repeat(args.payload_bytes);
    let n = args.messages;
    let c = args.concurrency;
    println!(
        "hookline-bench: {n} messages, concurrency {c}, payload ~{} B",
        args.payload_bytes + 20
    );

    // Ceiling: the same generator posting straight to the receiver.
    let direct = format!("{receiver_url}/direct");
    let (ceiling_client, pad2) = (client.clone(), pad.clone());
    let cpu_before = CpuMark::now(&[]);
    let (_, ceiling_wall) = load(&client, n, c, &receiver, move |seq| {
        ceiling_client.post(&direct).json(&payload(seq, &pad2))
    })
    .await?;
    let ceiling_cpu = (CpuMark::now(&[]).machine - cpu_before.machine).max(0.01);
    let ceiling = n as f64 / ceiling_wall.as_secs_f64();
    let ceiling_per_cpu = n as f64 / ceiling_cpu;
    receiver.reset();

    // Hookline end to end.
    let dir = TempDir(std::env::temp_dir().join(format!("hookline-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let (database_url, storage) = match &args.postgres_url {
        Some(url) => {
            report.postgres = Some(postgres_settings(url)?);
            let (schema_url, schema) = fresh_schema(url, "hookline_bench")?;
            let storage = Storage::Postgres {
                url: url.clone(),
                schema,
            };
            (schema_url, storage)
        }
        None => {
            if args.nodes > 1 {
                bail!("--nodes above 1 needs --postgres-url: the SQLite store serves one process");
            }
            let path = dir.0.join("bench.db");
            (sqlite_url(&path), Storage::Sqlite(path))
        }
    };
    let vacuum = match &storage {
        Storage::Postgres { url, schema } if args.pg_vacuum_every > 0 => {
            Some(tokio::spawn(vacuum_every(
                url.clone(),
                schema.clone(),
                Duration::from_secs(args.pg_vacuum_every),
            )))
        }
        _ => None,
    };
    let result = hookline_phases(
        args,
        report,
        &client,
        &receiver,
        &receiver_url,
        &database_url,
        &storage,
        (ceiling, ceiling_per_cpu),
    )
    .await;
    if let Some(vacuum) = vacuum {
        vacuum.abort();
    }
    drop(dir);
    if let Storage::Postgres { url, schema } = &storage {
        psql(url, &format!("DROP SCHEMA {schema} CASCADE"))?;
    }
    result?;

    if args.backlog > 0 {
        backlog_phase(
            args,
            report,
            &client,
            &receiver,
            &receiver_url,
            &pad,
            timeout,
        )
        .await?;
    }
    if args.jobs > 0 {
        jobs_phase(args, report, timeout).await?;
    }
    Ok(())
}

/// The phases on the Hookline nodes sharing `database_url`: main, fan-out and ingest. The
/// nodes end when it returns, whether it failed or not.
#[allow(clippy::too_many_arguments)]
async fn hookline_phases(
    args: &Args,
    report: &mut Report,
    client: &reqwest::Client,
    receiver: &Arc<Receiver>,
    receiver_url: &str,
    database_url: &str,
    storage: &Storage,
    (ceiling, ceiling_per_cpu): (f64, f64),
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let (n, c) = (args.messages, args.concurrency);
    let pad = "x".repeat(args.payload_bytes);
    let postgres = matches!(storage, Storage::Postgres { .. });
    let mut nodes = Vec::new();
    for _ in 0..args.nodes.max(1) {
        let (child, url) = start_server(&args.server_bin, database_url, "all").await?;
        nodes.push(Server {
            child,
            url,
            _dir: None,
        });
    }
    let backend = if postgres { "postgresql" } else { "sqlite" };
    println!("backend: {backend}, {} node(s)", nodes.len());
    let server = &nodes[0];
    let pids: Vec<u32> = nodes.iter().map(|node| node.child.id()).collect();
    let app_id = create_app_with_endpoints(client, &server.url, receiver_url, 1).await?;
    let create_urls: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}/api/v1/app/{app_id}/msg", node.url))
        .collect();
    let (create_client, pad3) = (client.clone(), pad.clone());
    let disk_before = storage.mark(&pids)?;
    let counts_before = ClaimCounts::now(client, &nodes).await?;
    let cpu_before = CpuMark::now(&pids);
    let started = Instant::now();
    let (create_latencies, create_wall) = load(client, n, c, receiver, move |seq| {
        create_client
            .post(&create_urls[seq % create_urls.len()])
            .bearer_auth(TOKEN)
            .json(&json!({"eventType": "bench.event", "payload": payload(seq, &pad3)}))
    })
    .await?;
    wait_for(receiver, n, timeout, true).await?;
    let end_to_end = started.elapsed();
    let cpu_after = CpuMark::now(&pids);
    let counts_after = ClaimCounts::now(client, &nodes).await?;
    let mut delivery_latencies = receiver.latencies(n);
    delivery_latencies.sort();
    let accepted = n as f64 / create_wall.as_secs_f64();
    let delivered = n as f64 / end_to_end.as_secs_f64();
    let duplicates = receiver.total.load(Ordering::Relaxed).saturating_sub(n);
    let peak_rss = pids.iter().map(|&pid| memory(pid).0).fold(0.0, f64::max);

    report.add(
        "ceiling",
        "ceiling: direct posts to the receiver",
        ceiling,
        Unit::PerSecond,
        Some(1.0),
    );
    report.add(
        "ceiling",
        "ceiling: direct posts per machine CPU-second",
        ceiling_per_cpu,
        Unit::PerCpuSecond,
        Some(1.0),
    );
    report.add(
        "main",
        "messages accepted (2xx on create)",
        accepted,
        Unit::PerSecond,
        Some(accepted / ceiling),
    );
    let p = |latencies: &[Duration], q: f64| ms(percentile(latencies, q));
    report.add(
        "main",
        "create latency p50",
        p(&create_latencies, 0.5),
        Unit::Millis,
        None,
    );
    report.add(
        "main",
        "create latency p99",
        p(&create_latencies, 0.99),
        Unit::Millis,
        None,
    );
    report.add(
        "main",
        "delivered end to end",
        delivered,
        Unit::PerSecond,
        Some(delivered / ceiling),
    );
    report.add(
        "main",
        "create-to-delivery p50",
        p(&delivery_latencies, 0.5),
        Unit::Millis,
        None,
    );
    report.add(
        "main",
        "create-to-delivery p99",
        p(&delivery_latencies, 0.99),
        Unit::Millis,
        None,
    );
    report.add(
        "main",
        "duplicate deliveries",
        duplicates as f64,
        Unit::Count,
        None,
    );
    report.add(
        "main",
        "server peak RSS (largest node)",
        peak_rss,
        Unit::MiB,
        None,
    );
    report_cpu(
        report,
        "main",
        "",
        ("message", "messages"),
        n,
        (cpu_before, cpu_after),
        postgres,
        ceiling_per_cpu,
    );
    counts_after.report(counts_before, report, ("main", ""), n, postgres);
    // The attempts of the last deliveries are recorded after their answers arrived, and
    // PostgreSQL's backends report their activity at most once a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let payload_size = serde_json::to_string(&payload(n / 2, &pad))?.len();
    storage.report(report, &disk_before, &pids, n, payload_size)?;
    match (&args.copy_database, storage) {
        (Some(into), Storage::Sqlite(path)) => copy_database(path, into)?,
        (Some(_), Storage::Postgres { .. }) => {
            println!("note: --copy-database copies a SQLite database; ignored with PostgreSQL");
        }
        (None, _) => {}
    }

    if args.fanout_messages > 0 {
        receiver.reset();
        let fan_app = create_app_with_endpoints(client, &server.url, receiver_url, 100).await?;
        let fan_urls: Vec<String> = nodes
            .iter()
            .map(|node| format!("{}/api/v1/app/{fan_app}/msg", node.url))
            .collect();
        let (fan_client, pad4) = (client.clone(), pad.clone());
        let m = args.fanout_messages;
        let counts_before = ClaimCounts::now(client, &nodes).await?;
        let cpu_before = CpuMark::now(&pids);
        let started = Instant::now();
        load(client, m, c, receiver, move |seq| {
            fan_client
                .post(&fan_urls[seq % fan_urls.len()])
                .bearer_auth(TOKEN)
                .json(&json!({"eventType": "bench.fanout", "payload": payload(seq, &pad4)}))
        })
        .await?;
        wait_for(receiver, m * 100, timeout, false).await?;
        let rate = (m * 100) as f64 / started.elapsed().as_secs_f64();
        let cpu_after = CpuMark::now(&pids);
        let counts_after = ClaimCounts::now(client, &nodes).await?;
        report.add(
            "fanout",
            "fan-out: deliveries to 100 endpoints",
            rate,
            Unit::PerSecond,
            Some(rate / ceiling),
        );
        // The server's CPU per delivery is steadier than the rate on a shared machine:
        // compare builds with it.
        report_cpu(
            report,
            "fanout",
            "fan-out: ",
            ("delivery", "deliveries"),
            m * 100,
            (cpu_before, cpu_after),
            postgres,
            ceiling_per_cpu,
        );
        counts_after.report(
            counts_before,
            report,
            ("fanout", "fan-out: "),
            m * 100,
            postgres,
        );
    }
    if args.ingest > 0 {
        receiver.reset();
        ingest_phase(
            args,
            report,
            client,
            receiver,
            (&server.url, receiver_url),
            (&pids, postgres),
            (ceiling, ceiling_per_cpu),
        )
        .await?;
    }
    drop(nodes);
    Ok(())
}

/// What the job phase's emulator and receiver count.
#[derive(Default)]
struct JobCounts {
    /// Status calls answered.
    polls: AtomicUsize,
    /// Answer `completed` rather than `in_progress` from now on.
    completed: std::sync::atomic::AtomicBool,
    /// `job.succeeded` events delivered.
    succeeded: AtomicUsize,
    /// Job events delivered, of any type.
    events: AtomicUsize,
}

async fn batch_status(
    State(counts): State<Arc<JobCounts>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::Json<Value> {
    counts.polls.fetch_add(1, Ordering::Relaxed);
    let status = if counts.completed.load(Ordering::Relaxed) {
        "completed"
    } else {
        "in_progress"
    };
    axum::Json(json!({"id": id, "object": "batch", "status": status,
                      "request_counts": {"total": 100, "completed": 0, "failed": 0}}))
}

async fn job_event(State(counts): State<Arc<JobCounts>>, body: Bytes) -> &'static str {
    counts.events.fetch_add(1, Ordering::Relaxed);
    if memchr_type(&body, b"\"type\":\"job.succeeded\"") {
        counts.succeeded.fetch_add(1, Ordering::Relaxed);
    }
    "ok"
}

fn memchr_type(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|window| window == needle)
}

/// The job tracker with `--jobs` jobs in flight: how fast they are registered, the
/// server's memory while they are polled, the polls a second and the server's CPU per
/// poll, then how fast their outcome events go out once the emulator says they ended.
async fn jobs_phase(args: &Args, report: &mut Report, timeout: Duration) -> anyhow::Result<()> {
    let counts = Arc::new(JobCounts::default());
    let app = axum::Router::new()
        .route("/v1/batches/{id}", axum::routing::get(batch_status))
        .route("/events", post(job_event))
        .with_state(Arc::clone(&counts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = TempDir(std::env::temp_dir().join(format!("hookline-jobs-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let (database_url, schema) = match &args.postgres_url {
        Some(url) => {
            let (url, schema) = fresh_schema(url, "hookline_bench_jobs")?;
            (url, Some(schema))
        }
        None => (sqlite_url(&dir.0.join("jobs.db")), None),
    };
    let extra = [
        ("HOOKLINE_OPENAI_BASE_URL", format!("{local}/v1")),
        ("HOOKLINE_OPENAI_API_KEY", "sk-bench".to_owned()),
        ("HOOKLINE_OPENAI_REQUESTS_PER_SECOND", "10000".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let (child, url) = start_server_with(&args.server_bin, &database_url, "all", &extra).await?;
    let server = Server {
        child,
        url,
        _dir: None,
    };
    let pid = server.child.id();
    let vacuum = match (&args.postgres_url, &schema) {
        (Some(url), Some(schema)) if args.pg_vacuum_every > 0 => {
            Some(AbortOnDrop(tokio::spawn(vacuum_every(
                url.clone(),
                schema.clone(),
                Duration::from_secs(args.pg_vacuum_every),
            ))))
        }
        _ => None,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let app = api(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/app", server.url),
        json!({"name": "bench-jobs"}),
    )
    .await?;
    let app_id = app["id"].as_str().context("app id")?.to_owned();
    api(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/app/{app_id}/endpoint", server.url),
        json!({"url": format!("{local}/events")}),
    )
    .await?;

    let n = args.jobs;
    println!(
        "jobs: {n} OpenAI batches, polled every 5-10 s at a local emulator ({})",
        if schema.is_some() {
            "postgresql"
        } else {
            "sqlite"
        }
    );
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, url, app_id) = (
            client.clone(),
            Arc::clone(&next),
            format!("{}/api/v1/job", server.url),
            app_id.clone(),
        );
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                api(
                    &client,
                    reqwest::Method::POST,
                    url.clone(),
                    json!({"provider": "openai_batch", "providerJobId": format!("batch_{i}"),
                           "appId": app_id, "poll": {"after": 5, "interval": 5, "maxInterval": 10}}),
                )
                .await?;
            }
        }));
    }
    for creator in creators {
        creator.await??;
    }
    let created = started.elapsed();
    report.add(
        "jobs",
        "jobs registered",
        n as f64 / created.as_secs_f64(),
        Unit::PerSecond,
        None,
    );

    // Polls of the jobs in flight.
    let window = Duration::from_secs(args.jobs_window);
    let nodes = std::slice::from_ref(&server);
    let claims_before = scrape(&client, nodes, "hookline_poll_claims_total").await?;
    let (polls_before, cpu_before) = (counts.polls.load(Ordering::Relaxed), cpu_seconds(pid));
    let postgres_before = postgres_cpu_seconds();
    let watch = Instant::now();
    let mut rss_max: f64 = 0.0;
    while watch.elapsed() < window {
        rss_max = rss_max.max(memory(pid).1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let polls = counts.polls.load(Ordering::Relaxed) - polls_before;
    let cpu = cpu_seconds(pid) - cpu_before;
    let postgres = postgres_cpu_seconds() - postgres_before;
    let claims = scrape(&client, nodes, "hookline_poll_claims_total").await? - claims_before;
    let elapsed = watch.elapsed().as_secs_f64();
    report.add(
        "jobs",
        "polls with all jobs in flight",
        polls as f64 / elapsed,
        Unit::PerSecond,
        None,
    );
    report.add(
        "jobs",
        "server CPU per poll",
        cpu * 1e6 / polls.max(1) as f64,
        Unit::Micros,
        None,
    );
    if schema.is_some() {
        report.add(
            "jobs",
            "PostgreSQL CPU per poll",
            postgres * 1e6 / polls.max(1) as f64,
            Unit::Micros,
            None,
        );
    }
    report.add(
        "jobs",
        "poll claims per 100 polls",
        claims * 100.0 / polls.max(1) as f64,
        Unit::Count,
        None,
    );
    report.add(
        "jobs",
        "server RSS with the jobs in flight",
        rss_max,
        Unit::MiB,
        None,
    );
    report.add("jobs", "server peak RSS", memory(pid).0, Unit::MiB, None);

    // Outcomes.
    counts.completed.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    while counts.succeeded.load(Ordering::Relaxed) < n {
        if ended.elapsed() > timeout {
            bail!(
                "only {} of {n} outcomes arrived within {timeout:?}",
                counts.succeeded.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.add(
        "jobs",
        "outcome events (job.succeeded) delivered",
        n as f64 / ended.elapsed().as_secs_f64(),
        Unit::PerSecond,
        None,
    );
    report.add(
        "jobs",
        "job events delivered in all",
        counts.events.load(Ordering::Relaxed) as f64,
        Unit::Count,
        None,
    );
    drop(vacuum);
    drop(server);
    if let (Some(url), Some(schema)) = (&args.postgres_url, schema) {
        psql(url, &format!("DROP SCHEMA {schema} CASCADE"))?;
    }
    Ok(())
}

/// Fills a backlog with a server that only takes requests, then samples the memory of a
/// full server while it drains.
async fn backlog_phase(
    args: &Args,
    report: &mut Report,
    client: &reqwest::Client,
    receiver: &Arc<Receiver>,
    receiver_url: &str,
    pad: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    receiver.reset();
    let dir =
        TempDir(std::env::temp_dir().join(format!("hookline-backlog-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let db = dir.0.join("backlog.db");
    let (child, url) = start_server(&args.server_bin, &sqlite_url(&db), "api").await?;
    let filler = Server {
        child,
        url,
        _dir: None,
    };
    let app_id = create_app_with_endpoints(client, &filler.url, receiver_url, 1).await?;
    let create_url = format!("{}/api/v1/app/{app_id}/msg", filler.url);
    let (fill_client, pad) = (client.clone(), pad.to_owned());
    let started = Instant::now();
    load(
        client,
        args.backlog,
        args.concurrency,
        receiver,
        move |seq| {
            fill_client
                .post(&create_url)
                .bearer_auth(TOKEN)
                .json(&json!({"eventType": "bench.backlog", "payload": payload(seq, &pad)}))
        },
    )
    .await?;
    report.add(
        "backlog",
        "backlog filled",
        started.elapsed().as_secs_f64(),
        Unit::Seconds,
        None,
    );
    drop(filler);

    let (child, url) = start_server(&args.server_bin, &sqlite_url(&db), "all").await?;
    let drainer = Server {
        child,
        url,
        _dir: Some(dir),
    };
    let pid = drainer.child.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    while receiver.unique.load(Ordering::Relaxed) < args.backlog {
        if started.elapsed() > timeout {
            bail!("backlog did not drain within {timeout:?}");
        }
        samples.push((receiver.unique.load(Ordering::Relaxed), memory(pid).1));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain = started.elapsed();
    let rss: Vec<f64> = samples.iter().map(|(_, rss)| *rss).collect();
    let first = rss.first().copied().unwrap_or(0.0);
    let max = rss.iter().copied().fold(0.0, f64::max);
    report.add(
        "backlog",
        "backlog drained",
        args.backlog as f64 / drain.as_secs_f64(),
        Unit::PerSecond,
        None,
    );
    report.add(
        "backlog",
        "server RSS while draining (first sample)",
        first,
        Unit::MiB,
        None,
    );
    report.add(
        "backlog",
        "server RSS while draining (max)",
        max,
        Unit::MiB,
        None,
    );
    for (done, rss) in samples.iter().step_by((samples.len() / 8).max(1)) {
        report.add(
            "backlog",
            format!("    RSS with {done} delivered"),
            *rss,
            Unit::MiB,
            None,
        );
    }
    drop(drainer);
    Ok(())
}

/// The signing secret of the bench's OpenAI source.
const OPENAI_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An OpenAI `realtime.call.incoming` event of `size` bytes (or of its bare size, if that is
/// more): `seq` rides in `data` for the receiver, and a `padding` string in `data` makes up
/// the size (`--payload-bytes`).
fn realtime_call(seq: usize, size: usize) -> String {
    let event = |padding: &str| {
        format!(
            r#"{{"object":"event","id":"evt_{seq}","type":"realtime.call.incoming","created_at":1750287018,"data":{{"seq":{seq},"call_id":"rtc_{seq}","sip_headers":[{{"name":"From","value":"sip:+15555550100@example.com"}}],"padding":"{padding}"}}}}"#
        )
    };
    let bare = event("");
    match size.checked_sub(bare.len()) {
        Some(fill) if fill > 0 => event(&"x".repeat(fill)),
        _ => bare,
    }
}

/// Posts signed OpenAI webhooks to an `open-ai` source at the bench's concurrency and
/// reports how many are accepted per second, their answer latency, and how fast they
/// reach the source's endpoint.
async fn ingest_phase(
    args: &Args,
    report: &mut Report,
    client: &reqwest::Client,
    receiver: &Arc<Receiver>,
    (server, receiver_url): (&str, &str),
    (pids, postgres): (&[u32], bool),
    (ceiling, ceiling_per_cpu): (f64, f64),
) -> anyhow::Result<()> {
    use hookline_signature::{Keyset, Message, Scheme};

    let source = api(
        client,
        reqwest::Method::POST,
        format!("{server}/ingest/api/v1/source"),
        json!({"name": "bench openai", "type": "open-ai", "config": {"secret": OPENAI_SECRET}}),
    )
    .await?;
    let source_id = source["id"].as_str().context("source id")?;
    let ingest_url = source["ingestUrl"].as_str().context("ingestUrl")?;
    // The ingest URL names the server's public URL; post to the address it listens on.
    let token = ingest_url.rsplit('/').next().context("ingest token")?;
    let ingest_url = format!("{server}/in/{token}");
    api(
        client,
        reqwest::Method::POST,
        format!("{server}/ingest/api/v1/source/{source_id}/endpoint"),
        json!({"url": format!("{receiver_url}/hook/ingest")}),
    )
    .await?;
    let keys = Keyset::new(Scheme::OpenAi, [OPENAI_SECRET])?;
    let n = args.ingest;
    let size = args.payload_bytes;
    report.add(
        "ingest",
        "ingest: body of each webhook (signed as sent)",
        realtime_call(n / 2, size).len() as f64,
        Unit::Bytes,
        None,
    );
    let post_client = client.clone();
    let cpu_before = CpuMark::now(pids);
    let started = Instant::now();
    let (latencies, wall) = load(client, n, args.concurrency, receiver, move |seq| {
        let body = realtime_call(seq, size);
        let id = format!("wh_bench_{seq}");
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        let mut request = post_client
            .post(&ingest_url)
            .header("content-type", "application/json");
        let signed = keys.sign(&Message {
            id: &id,
            timestamp,
            body: body.as_bytes(),
        });
        for (name, value) in signed.unwrap_or_default() {
            request = request.header(name, value);
        }
        request.body(body)
    })
    .await?;
    wait_for(receiver, n, Duration::from_secs(args.timeout), true).await?;
    let end_to_end = started.elapsed();
    let cpu_after = CpuMark::now(pids);
    let mut forward_latencies = receiver.latencies(n);
    forward_latencies.sort();
    let accepted = n as f64 / wall.as_secs_f64();
    let forwarded = n as f64 / end_to_end.as_secs_f64();
    let p = |latencies: &[Duration], q: f64| ms(percentile(latencies, q));
    report.add(
        "ingest",
        "ingest: open-ai webhooks accepted",
        accepted,
        Unit::PerSecond,
        Some(accepted / ceiling),
    );
    report.add(
        "ingest",
        "ingest answer latency p50",
        p(&latencies, 0.5),
        Unit::Millis,
        None,
    );
    report.add(
        "ingest",
        "ingest answer latency p99",
        p(&latencies, 0.99),
        Unit::Millis,
        None,
    );
    report.add(
        "ingest",
        "ingest: forwarded end to end",
        forwarded,
        Unit::PerSecond,
        Some(forwarded / ceiling),
    );
    report.add(
        "ingest",
        "realtime.call.incoming ingest-to-delivery p50",
        p(&forward_latencies, 0.5),
        Unit::Millis,
        None,
    );
    report.add(
        "ingest",
        "realtime.call.incoming ingest-to-delivery p99",
        p(&forward_latencies, 0.99),
        Unit::Millis,
        None,
    );
    // Received, stored, answered and forwarded: the CPU of the whole round.
    report_cpu(
        report,
        "ingest",
        "ingest: ",
        ("webhook", "webhooks"),
        n,
        (cpu_before, cpu_after),
        postgres,
        ceiling_per_cpu,
    );
    Ok(())
}
