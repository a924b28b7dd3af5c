//! The providers' status, cancel and create calls.
//!
//! Base URLs and credentials are the operator's configuration, so these calls do not go
//! through the delivery client's SSRF guard: they go where the operator pointed them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hookline_core::job::{Family, Provider};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use crate::http::RetryAfter;

/// Where one provider family's API is and the credential it takes.
#[derive(Clone, PartialEq)]
pub struct ProviderAccess {
    /// The base URL, without a trailing slash (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The API key or token; `None` when none is configured (then jobs of the family
    /// can be tracked through webhooks alone).
    pub credential: Option<String>,
    /// Status calls a second, in total over every node. Default 10.
    pub requests_per_second: f64,
}

impl fmt::Debug for ProviderAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderAccess")
            .field("base_url", &self.base_url)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "[redacted]"),
            )
            .field("requests_per_second", &self.requests_per_second)
            .finish()
    }
}

impl ProviderAccess {
    /// The public API of `family`, with no credential.
    pub fn public(family: Family) -> Self {
        let base_url = match family {
            Family::Openai => "https://api.openai.com/v1",
            Family::Replicate => "https://api.replicate.com/v1",
            Family::Anthropic => "https://api.anthropic.com",
            Family::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        };
        ProviderAccess {
            base_url: base_url.to_owned(),
            credential: None,
            requests_per_second: 10.0,
        }
    }
}

/// What a call to a provider came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A 2xx with a JSON body.
    Object(Value),
    /// 429: try again after the wait it asked for, if any.
    RateLimited(Option<RetryAfter>),
    /// Anything else: a 5xx, another status, a timeout, a body that is not JSON.
    Failed(String),
}

/// The HTTP client of the tracker.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    access: BTreeMap<Family, ProviderAccess>,
}

impl ProviderClient {
    pub fn new(access: BTreeMap<Family, ProviderAccess>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with rustls and no proxies builds");
        ProviderClient { http, access }
    }

    pub fn access(&self, family: Family) -> Option<&ProviderAccess> {
        self.access.get(&family)
    }

    /// Whether calls can be made to `family`: a credential is configured.
    pub fn can_call(&self, family: Family) -> bool {
        self.access(family).is_some_and(|a| a.credential.is_some())
    }

    /// `GET` of the job's status object.
    pub async fn status(&self, provider: Provider, provider_job_id: &str) -> Answer {
        match provider.status_path(provider_job_id) {
            Some(path) => self.call(provider, reqwest::Method::GET, &path, None).await,
            None => Answer::Failed(format!("{provider} jobs have no status call")),
        }
    }

    /// Asks the provider to cancel the job, where it has a cancel call (`None` if not).
    pub async fn cancel(&self, provider: Provider, provider_job_id: &str) -> Option<Answer> {
        let path = provider.cancel_path(provider_job_id)?;
        Some(
            self.call(provider, reqwest::Method::POST, &path, None)
                .await,
        )
    }

    /// Submits `request` to the provider's create call.
    pub async fn submit(&self, provider: Provider, request: &Value) -> Answer {
        match provider.submit_path() {
            Some(path) => {
                self.call(provider, reqwest::Method::POST, path, Some(request))
                    .await
            }
            None => Answer::Failed(format!("Hookline cannot submit {provider} jobs")),
        }
    }

    async fn call(
        &self,
        provider: Provider,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let Some(family) = provider.family() else {
            return Answer::Failed("custom jobs have no provider to call".into());
        };
        let Some(access) = self.access(family) else {
            return Answer::Failed(format!("no {} access is configured", family.as_str()));
        };
        let Some(credential) = &access.credential else {
            return Answer::Failed(format!("no {} credential is configured", family.as_str()));
        };
        let url = format!("{}{path}", access.base_url.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method, &url)
            .headers(auth_headers(family, credential));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Answer::Failed("timed out".into()),
            Err(error) => return Answer::Failed(format!("request failed: {error}")),
        };
        let status = response.status();
        if status.as_u16() == 429 {
            let wait = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(RetryAfter::parse);
            return Answer::RateLimited(wait);
        }
        if !status.is_success() {
            return Answer::Failed(format!("the provider answered {status}"));
        }
        match response.json::<Value>().await {
            Ok(value) => Answer::Object(value),
            Err(error) => Answer::Failed(format!("the answer is not JSON: {error}")),
        }
    }
}

/// The headers that carry `credential` as `family` expects it.
fn auth_headers(family: Family, credential: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = |text: String| {
        let mut value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    };
    match family {
        Family::Openai | Family::Replicate => {
            headers.insert("authorization", value(format!("Bearer {credential}")));
        }
        Family::Anthropic => {
            headers.insert("x-api-key", value(credential.to_owned()));
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        Family::Gemini => {
            headers.insert("x-goog-api-key", value(credential.to_owned()));
        }
    }
    headers
}
