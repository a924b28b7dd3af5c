//! Configuration: a pure function of the defaults (`config.default.toml`, compiled in), an
//! optional file, and `HOOKLINE_*` environment variables, validated once into [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use hookline_core::job::Family;
use hookline_core::sealed::{MainKey, Sealer};
use hookline_engine::track::ProviderAccess;
use serde::Deserialize;

/// The longest retention accepted: a hundred years. Times are computed by adding it to
/// the clock, which a longer one would overflow.
const MAX_RETENTION_SECS: u64 = 100 * 365 * 86_400;

/// The most deliveries a node may have in flight (`delivery.concurrency`).
const MAX_CONCURRENCY: usize = 100_000;

/// The commented reference configuration, which is also the source of every default.
pub const DEFAULT_TOML: &str = include_str!("../../../config.default.toml");

/// Validated configuration. Its `Debug` form shows no secret: the admin token, the JWT key
/// and the database URL's password are redacted.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Connections to PostgreSQL this node keeps at most.
    pub pool_size: usize,
    pub public_url: String,
    pub admin_token: Option<String>,
    /// The main key that seals endpoint and source secrets at rest, and the previous ones
    /// that still open what they sealed during a rotation.
    pub main_keys: MainKeys,
    /// The HS256 key of Svix-style JWT bearer tokens; `None`: JWTs are not accepted.
    pub jwt_secret: Option<String>,
    /// A bearer token that may read `/metrics` (and nothing else); the admin token may too.
    pub metrics_token: Option<String>,
    pub role: Role,
    /// This node's name, the owner of the delivery leases it holds; `None` for a random one.
    pub node_id: Option<String>,
    pub max_payload_bytes: usize,
    /// How long a message's payload is kept when its `payloadRetentionPeriod` does not
    /// say (forwarded requests' messages included).
    pub payload_retention: Duration,
    pub delivery: Delivery,
    pub operational: Option<Operational>,
    pub ingest: Ingest,
    pub jobs: Jobs,
    pub log: Log,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &crate::server::without_password(&self.database_url),
            )
            .field("pool_size", &self.pool_size)
            .field("public_url", &self.public_url)
            .field("admin_token", &redacted(&self.admin_token))
            .field("main_keys", &self.main_keys)
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("metrics_token", &redacted(&self.metrics_token))
            .field("role", &self.role)
            .field("node_id", &self.node_id)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("payload_retention", &self.payload_retention)
            .field("delivery", &self.delivery)
            .field("operational", &self.operational)
            .field("ingest", &self.ingest)
            .field("jobs", &self.jobs)
            .field("log", &self.log)
            .finish()
    }
}

/// The receiving side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    /// How long received requests stay in the request log (and count for dedupe).
    pub log_retention: Duration,
    /// Bytes of a refused request's body the log keeps.
    pub refused_body_bytes: usize,
    /// Refused requests of one source the log keeps per minute, across all nodes.
    pub refused_per_minute: u32,
    /// Where Google publishes the keys its OIDC tokens are signed with, which
    /// `google-pubsub` sources check pushes against: an `http(s)://` URL.
    pub google_jwks_url: String,
}

/// The job tracker. Its `Debug` shows no credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Jobs {
    /// Each provider family's API: base URL, credential, status calls a second.
    pub access: BTreeMap<Family, ProviderAccess>,
    /// How long a webhook for a job not yet registered is kept for it.
    pub unmatched_retention: Duration,
    /// Polls in flight at once on one node.
    pub poll_concurrency: usize,
    /// Longest a call to a provider may take.
    pub request_timeout: Duration,
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves the API only.
    Api,
    /// Makes deliveries only.
    Worker,
    /// Both (`all`, or `both`).
    All,
}

impl Role {
    /// `api`, `worker`, or `all` (also spelled `both`).
    pub fn parse(text: &str) -> anyhow::Result<Role> {
        match text {
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            "all" | "both" => Ok(Role::All),
            other => bail!("role must be api, worker or all (or both), got {other:?}"),
        }
    }

    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    pub fn delivers(self) -> bool {
        self != Role::Api
    }
}

/// How deliveries are made.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub retry_schedule: Vec<Duration>,
    pub attempt_timeout: Duration,
    /// CIDRs that deliveries may reach although private or loopback.
    pub allowed_subnets: Vec<String>,
    pub concurrency: usize,
    pub max_in_flight_per_endpoint: usize,
    pub disable_after: Duration,
    /// How long an idle worker waits before it looks again, if nothing wakes it.
    pub poll_interval: Duration,
    /// Only `https://` endpoints: the API refuses `http://` URLs and the engine will not
    /// deliver to one.
    pub https_only: bool,
    /// Sign under `svix-*` header names instead of `webhook-*`.
    pub svix_headers: bool,
}

/// Where operational events go.
#[derive(Clone, PartialEq)]
pub struct Operational {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Operational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operational")
            .field("url", &hookline_engine::without_credentials(&self.url))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys secrets are sealed at rest with (`main_key`, `previous_main_keys`), as given:
/// base64 texts already checked to be keys. Its `Debug` shows only the keys' ids.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MainKeys {
    pub current: Option<String>,
    pub previous: Vec<String>,
}

impl MainKeys {
    /// The sealer the stores are opened with.
    pub fn sealer(&self) -> anyhow::Result<Sealer> {
        Sealer::from_config(self.current.as_deref(), &self.previous).map_err(|error| {
            anyhow::anyhow!(
                "HOOKLINE_MAIN_KEY / HOOKLINE_PREVIOUS_MAIN_KEYS (main_key / \
                 previous_main_keys): {error}"
            )
        })
    }
}

impl std::fmt::Debug for MainKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |text: &String| {
            MainKey::parse(text).map_or_else(|_| "<invalid>".to_owned(), |key| key.id().to_owned())
        };
        f.debug_struct("MainKeys")
            .field("current", &self.current.as_ref().map(id))
            .field(
                "previous",
                &self.previous.iter().map(id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub json: bool,
    pub level: String,
}

/// The file's shape: every field optional, so a file may set only what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    database_url: Option<String>,
    pool_size: Option<usize>,
    public_url: Option<String>,
    admin_token: Option<String>,
    main_key: Option<String>,
    previous_main_keys: Option<Vec<String>>,
    jwt_secret: Option<String>,
    metrics_token: Option<String>,
    role: Option<String>,
    node_id: Option<String>,
    max_payload_bytes: Option<usize>,
    payload_retention: Option<u64>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    operational: RawOperational,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    jobs: RawJobs,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    unmatched_retention: Option<u64>,
    poll_concurrency: Option<usize>,
    request_timeout: Option<u64>,
    #[serde(default)]
    openai: RawProvider,
    #[serde(default)]
    replicate: RawProvider,
    #[serde(default)]
    anthropic: RawProvider,
    #[serde(default)]
    gemini: RawProvider,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: Option<String>,
    api_key: Option<String>,
    requests_per_second: Option<f64>,
}

impl RawJobs {
    fn provider(&mut self, family: Family) -> &mut RawProvider {
        match family {
            Family::Openai => &mut self.openai,
            Family::Replicate => &mut self.replicate,
            Family::Anthropic => &mut self.anthropic,
            Family::Gemini => &mut self.gemini,
        }
    }
}

/// The environment variable of a family's credential (Replicate calls it a token).
fn credential_var(family: Family) -> &'static str {
    match family {
        Family::Openai => "HOOKLINE_OPENAI_API_KEY",
        Family::Replicate => "HOOKLINE_REPLICATE_API_TOKEN",
        Family::Anthropic => "HOOKLINE_ANTHROPIC_API_KEY",
        Family::Gemini => "HOOKLINE_GEMINI_API_KEY",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_schedule: Option<Vec<u64>>,
    attempt_timeout: Option<u64>,
    allowed_subnets: Option<Vec<String>>,
    concurrency: Option<usize>,
    max_in_flight_per_endpoint: Option<usize>,
    disable_after: Option<u64>,
    poll_interval: Option<u64>,
    https_only: Option<bool>,
    svix_headers: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperational {
    url: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    log_retention: Option<u64>,
    refused_body_bytes: Option<usize>,
    refused_per_minute: Option<u32>,
    google_jwks_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

macro_rules! overlay {
    ($base:expr, $top:expr, [$($field:ident),*]) => {
        $( if $top.$field.is_some() { $base.$field = $top.$field; } )*
    };
}

impl Raw {
    fn overlay(&mut self, top: Raw) {
        overlay!(
            self,
            top,
            [
                listen,
                database_url,
                pool_size,
                public_url,
                admin_token,
                main_key,
                previous_main_keys,
                jwt_secret,
                metrics_token,
                role,
                node_id,
                max_payload_bytes,
                payload_retention
            ]
        );
        overlay!(
            self.delivery,
            top.delivery,
            [
                retry_schedule,
                attempt_timeout,
                allowed_subnets,
                concurrency,
                max_in_flight_per_endpoint,
                disable_after,
                poll_interval,
                https_only,
                svix_headers
            ]
        );
        overlay!(self.operational, top.operational, [url, secret]);
        overlay!(
            self.ingest,
            top.ingest,
            [
                log_retention,
                refused_body_bytes,
                refused_per_minute,
                google_jwks_url
            ]
        );
        let mut jobs = top.jobs;
        overlay!(
            self.jobs,
            jobs,
            [unmatched_retention, poll_concurrency, request_timeout]
        );
        for family in Family::ALL {
            let top = std::mem::take(jobs.provider(family));
            overlay!(
                self.jobs.provider(family),
                top,
                [base_url, api_key, requests_per_second]
            );
        }
        overlay!(self.log, top.log, [format, level]);
    }

    fn from_env(env: &HashMap<String, String>) -> anyhow::Result<Raw> {
        let get = |name: &str| env.get(name).map(|v| v.trim().to_owned());
        let list = |name: &str| {
            get(name).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            get(name)
                .map(|v| {
                    v.parse::<u64>().with_context(|| {
                        format!("{name} must be a whole number of seconds, got {v:?}")
                    })
                })
                .transpose()
        };
        let schedule = list("HOOKLINE_RETRY_SCHEDULE")
            .map(|items| {
                items
                    .iter()
                    .map(|s| {
                        s.parse::<u64>().with_context(|| {
                            format!("HOOKLINE_RETRY_SCHEDULE must list whole seconds, got {s:?}")
                        })
                    })
                    .collect::<anyhow::Result<Vec<u64>>>()
            })
            .transpose()?;
        let flag = |name: &str| -> anyhow::Result<Option<bool>> {
            get(name)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => bail!("{name} must be true or false, got {v:?}"),
                })
                .transpose()
        };
        Ok(Raw {
            listen: get("HOOKLINE_LISTEN"),
            database_url: get("HOOKLINE_DATABASE_URL"),
            pool_size: get("HOOKLINE_DATABASE_POOL_SIZE")
                .map(|v| {
                    v.parse::<usize>().with_context(|| {
                        format!("HOOKLINE_DATABASE_POOL_SIZE must be a whole number, got {v:?}")
                    })
                })
                .transpose()?,
            public_url: get("HOOKLINE_PUBLIC_URL"),
            admin_token: get("HOOKLINE_ADMIN_TOKEN"),
            main_key: get("HOOKLINE_MAIN_KEY"),
            previous_main_keys: list("HOOKLINE_PREVIOUS_MAIN_KEYS"),
            jwt_secret: get("HOOKLINE_JWT_SECRET"),
            metrics_token: get("HOOKLINE_METRICS_TOKEN"),
            role: get("HOOKLINE_ROLE"),
            node_id: get("HOOKLINE_NODE_ID"),
            max_payload_bytes: None,
            payload_retention: number("HOOKLINE_PAYLOAD_RETENTION")?,
            delivery: RawDelivery {
                retry_schedule: schedule,
                attempt_timeout: number("HOOKLINE_ATTEMPT_TIMEOUT")?,
                allowed_subnets: list("HOOKLINE_ALLOWED_SUBNETS"),
                https_only: flag("HOOKLINE_HTTPS_ONLY")?,
                svix_headers: flag("HOOKLINE_SVIX_HEADERS")?,
                ..RawDelivery::default()
            },
            operational: RawOperational {
                url: get("HOOKLINE_OPERATIONAL_URL"),
                secret: get("HOOKLINE_OPERATIONAL_SECRET"),
            },
            ingest: RawIngest {
                log_retention: number("HOOKLINE_INGEST_LOG_RETENTION")?,
                refused_body_bytes: number("HOOKLINE_INGEST_REFUSED_BODY_BYTES")?
                    .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX)),
                refused_per_minute: number("HOOKLINE_INGEST_REFUSED_PER_MINUTE")?
                    .map(|count| {
                        u32::try_from(count).map_err(|_| {
                            anyhow::anyhow!(
                                "HOOKLINE_INGEST_REFUSED_PER_MINUTE must be at most {}",
                                u32::MAX
                            )
                        })
                    })
                    .transpose()?,
                google_jwks_url: get("HOOKLINE_GOOGLE_JWKS_URL"),
            },
            jobs: {
                let mut jobs = RawJobs {
                    unmatched_retention: number("HOOKLINE_JOB_UNMATCHED_RETENTION")?,
                    ..RawJobs::default()
                };
                for family in Family::ALL {
                    let prefix = format!("HOOKLINE_{}", family.as_str().to_uppercase());
                    let rate_var = format!("{prefix}_REQUESTS_PER_SECOND");
                    *jobs.provider(family) = RawProvider {
                        base_url: get(&format!("{prefix}_BASE_URL")),
                        api_key: get(credential_var(family)),
                        requests_per_second: get(&rate_var)
                            .map(|v| {
                                v.parse::<f64>().with_context(|| {
                                    format!("{rate_var} must be a number, got {v:?}")
                                })
                            })
                            .transpose()?,
                    };
                }
                jobs
            },
            log: RawLog {
                format: get("HOOKLINE_LOG_FORMAT"),
                level: get("HOOKLINE_LOG_LEVEL"),
            },
        })
    }
}

impl Config {
    /// Loads the configuration from the defaults, `file` and `env`, later ones winning.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Config> {
        let mut raw: Raw = toml::from_str(DEFAULT_TOML).context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let from_file: Raw = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?;
            raw.overlay(from_file);
        }
        raw.overlay(Raw::from_env(env)?);
        Config::validate(raw)
    }

    fn validate(raw: Raw) -> anyhow::Result<Config> {
        let required = |value: Option<String>, name: &str| {
            value.with_context(|| format!("{name} is missing from the defaults"))
        };
        let listen_text = required(raw.listen, "listen")?;
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen must be address:port, got {listen_text:?}"))?;
        let database_url = required(raw.database_url, "database_url")?;
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            bail!("database_url must start with sqlite:// or postgres://, got {database_url:?}");
        }
        let pool_size = raw.pool_size.unwrap_or(16);
        if !(1..=1000).contains(&pool_size) {
            bail!("pool_size must be between 1 and 1000, got {pool_size}");
        }
        let public_url = raw
            .public_url
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| format!("http://{listen}"));
        let admin_token = raw.admin_token.filter(|token| !token.is_empty());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            bail!("admin_token must be at least 16 characters");
        }
        let main_keys = MainKeys {
            current: raw.main_key.filter(|key| !key.is_empty()),
            previous: raw.previous_main_keys.unwrap_or_default(),
        };
        main_keys.sealer()?;
        let jwt_secret = raw.jwt_secret.filter(|secret| !secret.is_empty());
        if let Some(secret) = &jwt_secret
            && secret.len() < 32
        {
            // HS256 is as strong as its key: RFC 7518 asks for at least 256 bits.
            bail!("jwt_secret must be at least 32 characters");
        }
        let metrics_token = raw.metrics_token.filter(|token| !token.is_empty());
        if let Some(token) = &metrics_token
            && token.len() < 16
        {
            bail!("metrics_token must be at least 16 characters");
        }
        let role = Role::parse(raw.role.as_deref().unwrap_or("all"))?;
        let node_id = raw.node_id.filter(|id| !id.is_empty());
        if let Some(id) = &node_id {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if id.len() > 64 || !id.chars().all(allowed) {
                bail!("node_id must be at most 64 letters, digits, '-', '_' or '.', got {id:?}");
            }
        }
        let d = raw.delivery;
        let timeout = d.attempt_timeout.unwrap_or(15);
        if !(1..=300).contains(&timeout) {
            bail!("attempt_timeout must be between 1 and 300 seconds, got {timeout}");
        }
        let concurrency = d.concurrency.unwrap_or(1024);
        let per_endpoint = d.max_in_flight_per_endpoint.unwrap_or(16);
        if concurrency == 0 || per_endpoint == 0 {
            bail!("concurrency and max_in_flight_per_endpoint must be at least 1");
        }
        // Each worker holds a connection and 32 places in line for deliveries handed over.
        if concurrency > MAX_CONCURRENCY {
            bail!("concurrency must be at most {MAX_CONCURRENCY}, got {concurrency}");
        }
        let poll_interval = d.poll_interval.unwrap_or(1);
        if !(1..=3600).contains(&poll_interval) {
            bail!("delivery.poll_interval must be between 1 and 3600 seconds, got {poll_interval}");
        }
        let operational = match (raw.operational.url, raw.operational.secret) {
            (Some(url), Some(secret)) if !url.is_empty() => {
                hookline_signature::Keyset::new(hookline_signature::Scheme::Standard, [&secret])
                    .context("operational.secret must be a whsec_ secret")?;
                Some(Operational { url, secret })
            }
            (Some(url), _) if !url.is_empty() => bail!("operational.url needs operational.secret"),
            _ => None,
        };
        let log_retention = raw.ingest.log_retention.unwrap_or(2_592_000);
        if !(1..=MAX_RETENTION_SECS).contains(&log_retention) {
            bail!(
                "ingest.log_retention must be from 1 to {MAX_RETENTION_SECS} seconds (100 years)"
            );
        }
        let payload_retention = raw.payload_retention.unwrap_or(7_776_000);
        if !(1..=MAX_RETENTION_SECS).contains(&payload_retention) {
            bail!("payload_retention must be from 1 to {MAX_RETENTION_SECS} seconds (100 years)");
        }
        let google_jwks_url = required(raw.ingest.google_jwks_url, "ingest.google_jwks_url")?;
        match reqwest::Url::parse(&google_jwks_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => bail!(
                "ingest.google_jwks_url (HOOKLINE_GOOGLE_JWKS_URL) must be an http:// or \
                 https:// URL, got {google_jwks_url:?}"
            ),
        }
        let jobs = validate_jobs(raw.jobs)?;
        let format = raw.log.format.unwrap_or_else(|| "json".into());
        if !matches!(format.as_str(), "json" | "text") {
            bail!("log.format must be json or text, got {format:?}");
        }
        Ok(Config {
            listen,
            database_url,
            pool_size,
            public_url,
            admin_token,
            main_keys,
            jwt_secret,
            metrics_token,
            role,
            node_id,
            max_payload_bytes: raw.max_payload_bytes.unwrap_or(1 << 20),
            payload_retention: Duration::from_secs(payload_retention),
            delivery: Delivery {
                retry_schedule: d
                    .retry_schedule
                    .unwrap_or_default()
                    .into_iter()
                    .map(Duration::from_secs)
                    .collect(),
                attempt_timeout: Duration::from_secs(timeout),
                allowed_subnets: d.allowed_subnets.unwrap_or_default(),
                concurrency,
                max_in_flight_per_endpoint: per_endpoint,
                disable_after: Duration::from_secs(d.disable_after.unwrap_or(432_000)),
                poll_interval: Duration::from_secs(poll_interval),
                https_only: d.https_only.unwrap_or(false),
                svix_headers: d.svix_headers.unwrap_or(false),
            },
            operational,
            ingest: Ingest {
                log_retention: Duration::from_secs(log_retention),
                refused_body_bytes: raw.ingest.refused_body_bytes.unwrap_or(4096),
                refused_per_minute: raw.ingest.refused_per_minute.unwrap_or(60),
                google_jwks_url,
            },
            jobs,
            log: Log {
                json: format == "json",
                level: raw.log.level.unwrap_or_else(|| "info".into()),
            },
        })
    }
}

fn validate_jobs(mut raw: RawJobs) -> anyhow::Result<Jobs> {
    let unmatched = raw.unmatched_retention.unwrap_or(86_400);
    if !(1..=MAX_RETENTION_SECS).contains(&unmatched) {
        bail!("jobs.unmatched_retention must be from 1 to {MAX_RETENTION_SECS} seconds");
    }
    let poll_concurrency = raw.poll_concurrency.unwrap_or(32);
    if !(1..=10_000).contains(&poll_concurrency) {
        bail!("jobs.poll_concurrency must be between 1 and 10000, got {poll_concurrency}");
    }
    let timeout = raw.request_timeout.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        bail!("jobs.request_timeout must be between 1 and 300 seconds, got {timeout}");
    }
    let mut access = BTreeMap::new();
    for family in Family::ALL {
        let name = family.as_str();
        let given = std::mem::take(raw.provider(family));
        let mut provider = ProviderAccess::public(family);
        if let Some(base_url) = given.base_url.filter(|url| !url.is_empty()) {
            let parsed = reqwest::Url::parse(&base_url)
                .with_context(|| format!("jobs.{name}.base_url must be a URL, got {base_url:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("jobs.{name}.base_url must be http or https, got {base_url:?}");
            }
            provider.base_url = base_url.trim_end_matches('/').to_owned();
        }
        provider.credential = given.api_key.filter(|key| !key.is_empty());
        if let Some(rate) = given.requests_per_second {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
                bail!("jobs.{name}.requests_per_second must be above 0 and at most 10000");
            }
            provider.requests_per_second = rate;
        }
        access.insert(family, provider);
    }
    Ok(Jobs {
        access,
        unmatched_retention: Duration::from_secs(unmatched),
        poll_concurrency,
        request_timeout: Duration::from_secs(timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8071");
        assert_eq!(config.database_url, "sqlite://hookline.db");
        assert_eq!(config.public_url, "http://127.0.0.1:8071");
        assert_eq!(config.admin_token, None);
        assert_eq!(config.role, Role::All);
        assert_eq!(config.node_id, None);
        assert_eq!(
            config.delivery.retry_schedule,
            [5, 300, 1800, 7200, 18000, 36000, 36000].map(Duration::from_secs)
        );
        assert_eq!(config.delivery.attempt_timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.poll_interval, Duration::from_secs(1));
        assert!(config.delivery.allowed_subnets.is_empty());
        assert!(!config.delivery.https_only);
        assert_eq!(config.jwt_secret, None);
        assert_eq!(config.operational, None);
        assert_eq!(
            config.ingest.log_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.ingest.refused_body_bytes, 4096);
        assert_eq!(config.ingest.refused_per_minute, 60);
        assert_eq!(
            config.ingest.google_jwks_url,
            "https://www.googleapis.com/oauth2/v3/certs"
        );
        assert_eq!(
            config.ingest.google_jwks_url,
            hookline_signature::oidc::GOOGLE_JWKS_URL
        );
        assert_eq!(config.payload_retention, Duration::from_secs(90 * 86_400));
        assert!(config.log.json);
    }

    #[test]
    fn retentions_beyond_a_century_are_refused() {
        for (name, setting) in [
            ("HOOKLINE_PAYLOAD_RETENTION", "payload_retention"),
            ("HOOKLINE_INGEST_LOG_RETENTION", "log_retention"),
        ] {
            let error = Config::load(None, &env(&[(name, "99999999999999")])).unwrap_err();
            assert!(format!("{error:#}").contains(setting), "{name}: {error:#}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = Config::load(
            None,
            &env(&[
                ("HOOKLINE_ADMIN_TOKEN", "admin-token-3f9c1a7e"),
                (
                    "HOOKLINE_JWT_SECRET",
                    "jwt-key-0123456789abcdef0123456789abcdef",
                ),
                (
                    "HOOKLINE_DATABASE_URL",
                    "postgres://hook:pg-pass-77@db/hookline",
                ),
            ]),
        )
        .unwrap();
        let shown = format!("{config:?}");
        for secret in ["admin-token-3f9c1a7e", "jwt-key-0123456789", "pg-pass-77"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://hook:***@db/hookline"), "{shown}");
    }

    #[test]
    fn environment_wins_over_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("hookline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hookline.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\n[delivery]\nattempt_timeout = 30\nconcurrency = 8\npoll_interval = 7\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            &env(&[
                ("HOOKLINE_LISTEN", "127.0.0.1:9100"),
                ("HOOKLINE_RETRY_SCHEDULE", "1, 2,3"),
                ("HOOKLINE_ALLOWED_SUBNETS", "127.0.0.0/8,::1/128"),
                ("HOOKLINE_ADMIN_TOKEN", "a-long-enough-admin-token"),
                ("HOOKLINE_NODE_ID", "eu-west-1.node_2"),
                ("HOOKLINE_HTTPS_ONLY", "true"),
                ("HOOKLINE_JWT_SECRET", "a-jwt-key-of-at-least-32-characters"),
            ]),
        )
        .unwrap();
        assert!(config.delivery.https_only);
        assert_eq!(
            config.jwt_secret.as_deref(),
            Some("a-jwt-key-of-at-least-32-characters")
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.node_id.as_deref(), Some("eu-west-1.node_2"));
        assert_eq!(config.delivery.attempt_timeout, Duration::from_secs(30));
        assert_eq!(config.delivery.concurrency, 8);
        assert_eq!(config.delivery.poll_interval, Duration::from_secs(7));
        assert_eq!(
            config.delivery.retry_schedule,
            [1, 2, 3].map(Duration::from_secs)
        );
        assert_eq!(config.delivery.allowed_subnets, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            config.admin_token.as_deref(),
            Some("a-long-enough-admin-token")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn what_is_kept_is_read_from_the_environment() {
        let config = Config::load(
            None,
            &env(&[
                ("HOOKLINE_INGEST_REFUSED_BODY_BYTES", "512"),
                ("HOOKLINE_INGEST_REFUSED_PER_MINUTE", "5"),
                ("HOOKLINE_PAYLOAD_RETENTION", "432000"),
                ("HOOKLINE_GOOGLE_JWKS_URL", "http://127.0.0.1:9999/certs"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ingest.google_jwks_url, "http://127.0.0.1:9999/certs");
        assert_eq!(config.ingest.refused_body_bytes, 512);
        assert_eq!(config.ingest.refused_per_minute, 5);
        assert_eq!(config.payload_retention, Duration::from_secs(5 * 86_400));
        let error = Config::load(None, &env(&[("HOOKLINE_PAYLOAD_RETENTION", "0")])).unwrap_err();
        assert!(
            format!("{error:#}").contains("payload_retention"),
            "{error:#}"
        );
    }

    #[test]
    fn roles_are_api_worker_or_both() {
        for (text, role) in [
            ("api", Role::Api),
            ("worker", Role::Worker),
            ("all", Role::All),
            ("both", Role::All),
        ] {
            assert_eq!(Role::parse(text).unwrap(), role, "{text}");
        }
        let config = Config::load(None, &env(&[("HOOKLINE_ROLE", "both")])).unwrap();
        assert!(config.role.serves_api() && config.role.delivers());
        let worker = Config::load(None, &env(&[("HOOKLINE_ROLE", "worker")])).unwrap();
        assert!(!worker.role.serves_api() && worker.role.delivers());
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let cases = [
            ("HOOKLINE_LISTEN", "nowhere", "listen"),
            ("HOOKLINE_ATTEMPT_TIMEOUT", "0", "attempt_timeout"),
            (
                "HOOKLINE_ATTEMPT_TIMEOUT",
                "soon",
                "HOOKLINE_ATTEMPT_TIMEOUT",
            ),
            ("HOOKLINE_RETRY_SCHEDULE", "5,x", "HOOKLINE_RETRY_SCHEDULE"),
            ("HOOKLINE_DATABASE_URL", "mysql://x", "database_url"),
            ("HOOKLINE_ADMIN_TOKEN", "short", "admin_token"),
            ("HOOKLINE_ROLE", "boss", "role"),
            ("HOOKLINE_NODE_ID", "node 1", "node_id"),
            ("HOOKLINE_HTTPS_ONLY", "sometimes", "HOOKLINE_HTTPS_ONLY"),
            ("HOOKLINE_JWT_SECRET", "short", "jwt_secret"),
            (
                "HOOKLINE_OPERATIONAL_URL",
                "http://ops.test",
                "operational.secret",
            ),
            ("HOOKLINE_GOOGLE_JWKS_URL", "", "google_jwks_url"),
            (
                "HOOKLINE_GOOGLE_JWKS_URL",
                "ftp://keys.test/certs",
                "google_jwks_url",
            ),
            ("HOOKLINE_GOOGLE_JWKS_URL", "certs.json", "google_jwks_url"),
        ];
        for (name, value, mentioned) in cases {
            let error = Config::load(None, &env(&[(name, value)])).unwrap_err();
            assert!(
                format!("{error:#}").contains(mentioned),
                "{name}={value}: {error:#}"
            );
        }
    }

    #[test]
    fn main_keys_are_checked_at_load_and_never_shown() {
        let (current, current_text) = hookline_core::sealed::MainKey::generate();
        let (previous, previous_text) = hookline_core::sealed::MainKey::generate();
        let config = Config::load(
            None,
            &env(&[
                ("HOOKLINE_MAIN_KEY", &current_text),
                ("HOOKLINE_PREVIOUS_MAIN_KEYS", &format!("{previous_text}, ")),
            ]),
        )
        .unwrap();
        let sealer = config.main_keys.sealer().unwrap();
        assert_eq!(sealer.current_key_id(), Some(current.id()));
        let shown = format!("{config:?}");
        assert!(!shown.contains(&current_text) && !shown.contains(&previous_text));
        assert!(
            shown.contains(current.id()) && shown.contains(previous.id()),
            "{shown}"
        );
        assert_eq!(
            Config::load(None, &HashMap::new()).unwrap().main_keys,
            MainKeys::default()
        );
        for (name, value) in [
            ("HOOKLINE_MAIN_KEY", "too-short"),
            ("HOOKLINE_PREVIOUS_MAIN_KEYS", "bm90IDMyIGJ5dGVz"),
        ] {
            let error = Config::load(None, &env(&[(name, value)])).unwrap_err();
            let error = format!("{error:#}");
            assert!(
                error.contains(name) && error.contains("32 random bytes"),
                "{error}"
            );
        }
        let twice = Config::load(
            None,
            &env(&[
                ("HOOKLINE_MAIN_KEY", &current_text),
                ("HOOKLINE_PREVIOUS_MAIN_KEYS", &current_text),
            ]),
        );
        assert!(format!("{:#}", twice.unwrap_err()).contains("given twice"));
    }

    #[test]
    fn unknown_keys_and_bad_values_in_a_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("hookline-config-x-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[delivery]\nretry_shedule = [1]\n").unwrap();
        let error = Config::load(Some(&file), &HashMap::new()).unwrap_err();
        assert!(format!("{error:#}").contains("retry_shedule"), "{error:#}");
        for poll in ["0", "3601"] {
            std::fs::write(&file, format!("[delivery]\npoll_interval = {poll}\n")).unwrap();
            let error = Config::load(Some(&file), &HashMap::new()).unwrap_err();
            assert!(format!("{error:#}").contains("poll_interval"), "{error:#}");
        }
        for concurrency in ["0", "100001"] {
            std::fs::write(&file, format!("[delivery]\nconcurrency = {concurrency}\n")).unwrap();
            let error = Config::load(Some(&file), &HashMap::new()).unwrap_err();
            assert!(format!("{error:#}").contains("concurrency"), "{error:#}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// Property test: whatever `HOOKLINE_*` variables hold, loading never panics, and a
    /// refusal names a variable that was set (by its name or its setting's).
    mod props {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        /// Every variable read, and the words an error about it may name it by.
        const VARIABLES: [(&str, &[&str]); 25] = [
            ("HOOKLINE_LISTEN", &["listen"]),
            ("HOOKLINE_DATABASE_URL", &["database_url"]),
            ("HOOKLINE_DATABASE_POOL_SIZE", &["pool_size"]),
            ("HOOKLINE_PUBLIC_URL", &["public_url"]),
            ("HOOKLINE_ADMIN_TOKEN", &["admin_token"]),
            ("HOOKLINE_MAIN_KEY", &["main_key"]),
            ("HOOKLINE_PREVIOUS_MAIN_KEYS", &["main_key"]),
            ("HOOKLINE_JWT_SECRET", &["jwt_secret"]),
            ("HOOKLINE_METRICS_TOKEN", &["metrics_token"]),
            ("HOOKLINE_ROLE", &["role"]),
            ("HOOKLINE_NODE_ID", &["node_id"]),
            ("HOOKLINE_PAYLOAD_RETENTION", &["payload_retention"]),
            ("HOOKLINE_RETRY_SCHEDULE", &["retry_schedule"]),
            ("HOOKLINE_ATTEMPT_TIMEOUT", &["attempt_timeout"]),
            ("HOOKLINE_ALLOWED_SUBNETS", &["allowed_subnets"]),
            ("HOOKLINE_HTTPS_ONLY", &["https_only"]),
            ("HOOKLINE_SVIX_HEADERS", &["svix_headers"]),
            // A URL without a secret is refused by naming the secret it lacks.
            (
                "HOOKLINE_OPERATIONAL_URL",
                &["operational.url", "operational.secret"],
            ),
            ("HOOKLINE_OPERATIONAL_SECRET", &["operational.secret"]),
            ("HOOKLINE_INGEST_LOG_RETENTION", &["log_retention"]),
            (
                "HOOKLINE_INGEST_REFUSED_BODY_BYTES",
                &["refused_body_bytes"],
            ),
            (
                "HOOKLINE_INGEST_REFUSED_PER_MINUTE",
                &["refused_per_minute"],
            ),
            ("HOOKLINE_GOOGLE_JWKS_URL", &["google_jwks_url"]),
            ("HOOKLINE_LOG_FORMAT", &["log.format"]),
            ("HOOKLINE_LOG_LEVEL", &["log.level"]),
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,40}",
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                (0u64..5000).prop_map(|n| n.to_string()),
                Just("99999999999999999999999999".to_owned()),
                "[0-9, x-]{0,20}",
                "(true|false|yes|no|on|off|TRUE|2)",
                "(api|worker|all|both|json|text|info|debug)",
                "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1\\]|localhost|999\\.1\\.1\\.1):[0-9]{0,6}",
                "(sqlite://|postgres://|mysql://|sqlite:)[a-z/.]{0,12}",
                "(http|https|ftp)://[a-z.]{0,12}(:[0-9]{1,6})?",
                "(whsec_|whsk_|hlk1_)[A-Za-z0-9+/=]{0,50}",
                "[a-zA-Z0-9_.-]{0,70}",
                "[0-9./:a-f]{0,20}(,[0-9./:a-f]{0,20}){0,3}",
                Just(" \t ".to_owned()),
                Just("\0".to_owned()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn loading_never_panics_and_refusals_name_a_variable(
                set in vec((prop::sample::select(&VARIABLES[..]), value()), 1..5),
            ) {
                let env: HashMap<String, String> = set
                    .iter()
                    .map(|((name, _), value)| ((*name).to_owned(), value.clone()))
                    .collect();
                let Err(error) = Config::load(None, &env) else {
                    return Ok(());
                };
                let text = format!("{error:#}");
                let named = |name: &str| {
                    let (_, words) = VARIABLES.iter().find(|(n, _)| *n == name).unwrap();
                    text.contains(name) || words.iter().any(|word| text.contains(word))
                };
                prop_assert!(
                    env.keys().any(|name| named(name)),
                    "{env:?}: {text}"
                );
                if env.len() == 1 {
                    let name = env.keys().next().unwrap();
                    prop_assert!(named(name), "{name}: {text}");
                }
            }
        }
    }
}
