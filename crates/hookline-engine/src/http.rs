//! The HTTP side of an attempt: a client that never follows redirects, never uses a proxy
//! and, when guarded, connects only to addresses the SSRF guard allowed; a POST bounded by
//! the attempt timeout; the answer read into a bounded excerpt; failures sorted into
//! [`ErrorKind`]s.
//!
//! The client is hyper's own pooled client with rustls, without the layers a general
//! purpose client adds (redirect and retry policies, proxies, URL re-parsing on every
//! request). hyper only sends a request again when a pooled connection turned out to be
//! closed before any of it was written.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use hookline_core::memo::Memo;
use hookline_core::model::ErrorKind;
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, timeout_at};

use crate::ssrf::{Guard, Refused};

/// The most of an answer's body kept (and read) per attempt.
pub(crate) const EXCERPT_BYTES: usize = 4096;

/// `user-agent` of every request Hookline makes.
pub(crate) const USER_AGENT: &str = concat!("Hookline/", env!("CARGO_PKG_VERSION"));

/// The most of a failure's description kept in an attempt.
const DETAIL_CHARS: usize = 512;

/// Parsed endpoint URLs kept at most.
const MAX_PARSED_URLS: usize = 10_000;

/// How long a kept-alive connection may sit unused in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive of pooled connections, so that one a middlebox has forgotten is noticed
/// before an attempt is written into it: the first probe after this much quiet, then one
/// per interval, up to this many.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may go unacknowledged before the connection is given up.
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn StdError + Send + Sync>;

/// An endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// Names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The start of the body, at most [`EXCERPT_BYTES`], decoded lossily as UTF-8.
    pub body: String,
    /// The `Retry-After` the answer gave, when valid.
    pub retry_after: Option<RetryAfter>,
}

/// A request that got no answer: how it failed, and the details for the attempt log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// A name resolved to no address.
#[derive(Debug, thiserror::Error)]
#[error("dns lookup of {host} failed")]
struct DnsFailure {
    host: String,
    #[source]
    source: Option<std::io::Error>,
}

/// Resolves with the system resolver and, when guarded, keeps only the addresses the guard
/// allows, so the connection goes to an address that was checked (no second lookup to
/// rebind). IP literals never reach it: [`HttpClient::post`] checks those itself.
#[derive(Debug, Clone)]
struct Resolver {
    guard: Option<Arc<Guard>>,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup: std::io::Result<Vec<SocketAddr>> =
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map(Iterator::collect);
            let found = match lookup {
                Ok(found) => found,
                Err(source) => {
                    return Err(DnsFailure {
                        host,
                        source: Some(source),
                    }
                    .into());
                }
            };
            let Some(guard) = guard else {
                return match found.is_empty() {
                    false => Ok(found.into_iter()),
                    true => Err(DnsFailure { host, source: None }.into()),
                };
            };
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match guard.check(addr.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        refused.get_or_insert_with(|| refusal.resolved_from(&host));
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (false, _) => Ok(allowed.into_iter()),
                (true, Some(refusal)) => Err(refusal.into()),
                (true, None) => Err(DnsFailure { host, source: None }.into()),
            }
        })
    }
}

/// Where a URL points: the request target, its host when that is an IP address, and the
/// `Basic` authorization its credentials (`https://user:pass@host/`) stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    uri: Uri,
    literal: Option<IpAddr>,
    authorization: Option<HeaderValue>,
}

/// The client of deliveries (guarded) or of operational events (trusted URL).
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
    guard: Option<Arc<Guard>>,
    /// Refuse `http://` URLs (`https_only`).
    https_only: bool,
    /// Endpoint URLs already parsed: the same few are posted to over and over.
    parsed: Arc<Memo<String, Target>>,
}

impl HttpClient {
    /// A client that connects only where `guard` allows.
    pub fn guarded(guard: Guard) -> Result<Self, rustls::Error> {
        Self::new(Some(Arc::new(guard)))
    }

    /// A client for a URL the operator configured, which the guard need not police.
    pub fn trusted() -> Result<Self, rustls::Error> {
        Self::new(None)
    }

    fn new(guard: Option<Arc<Guard>>) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new_with_resolver(Resolver {
            guard: guard.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(KEEPALIVE));
        http.set_keepalive_interval(Some(KEEPALIVE));
        http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        #[cfg(target_os = "linux")]
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // No redirect is followed (there is no layer that would) and no proxy is used: a
        // proxy would resolve and connect on our behalf, out of the guard's sight.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Ok(HttpClient {
            client,
            guard,
            https_only: false,
            parsed: Arc::new(Memo::new(MAX_PARSED_URLS)),
        })
    }

    /// This client, refusing `http://` URLs when `on`.
    pub fn https_only(mut self, on: bool) -> Self {
        self.https_only = on;
        self
    }

    /// POSTs `body` to `url`; the whole exchange, body excerpt included, ends by `timeout`.
    /// `user-agent`, `accept` and the URL's credentials as `authorization` are added unless
    /// `headers` has them.
    pub async fn post(
        &self,
        url: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let deadline = Instant::now() + timeout;
        let target = self.parse(url)?;
        if self.https_only && target.uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(Failure::new(
                ErrorKind::SsrfRefused,
                "refused: this server delivers over HTTPS only (delivery.https_only, \
                 HOOKLINE_HTTPS_ONLY) and the endpoint's URL is http://; change it to https://",
            ));
        }
        if let (Some(guard), Some(ip)) = (&self.guard, target.literal) {
            // The resolver never sees an IP literal: check it here.
            guard
                .check(ip)
                .map_err(|refusal| Failure::new(ErrorKind::SsrfRefused, refusal.to_string()))?;
        }
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        if let Some(authorization) = target.authorization {
            headers.entry(AUTHORIZATION).or_insert(authorization);
        }
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target.uri;
        *request.headers_mut() = headers;
        let response = match timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(timed_out(timeout)),
            Ok(Err(error)) => return Err(classify(&error)),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let retry_after = parts
            .headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(RetryAfter::parse);
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = read_excerpt(body, deadline).await;
        Ok(Answer {
            status: parts.status.as_u16(),
            headers,
            body,
            retry_after,
        })
    }

    /// `url` parsed, once per distinct URL; an http or https one, or the failure. Parsed as
    /// a browser would (so `http://2130706433/` is 127.0.0.1), then written out again as
    /// the request target, without its credentials.
    fn parse(&self, url: &str) -> Result<Target, Failure> {
        if let Some(parsed) = self.parsed.get(url) {
            return Ok(parsed);
        }
        let invalid = |reason: String| Failure::new(ErrorKind::InvalidUrl, reason);
        let mut parsed =
            url::Url::parse(url).map_err(|error| invalid(format!("invalid url: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "invalid url: scheme {:?} is not http or https",
                parsed.scheme()
            )));
        }
        let authorization = take_credentials(&mut parsed);
        let uri = Uri::try_from(parsed.as_str())
            .map_err(|error| invalid(format!("invalid url: {error}")))?;
        let target = Target {
            uri,
            literal: literal_ip(&parsed),
            authorization,
        };
        self.parsed.insert(url.to_owned(), target.clone());
        Ok(target)
    }
}

/// `url` fit for a log line: without the credentials it may carry (`https://user:pass@…`).
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            take_credentials(&mut parsed);
            parsed.into()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Takes the credentials out of `url` (`https://user:pass@host/`) and returns the `Basic`
/// authorization they stand for, as a browser would send it.
fn take_credentials(url: &mut url::Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    // Only a URL without a host has no credentials to take; this one has them.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut value =
        HeaderValue::try_from(format!("Basic {}", BASE64_STANDARD.encode(credentials))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The host of `url` when it is an IP address.
fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// Reads the body until [`EXCERPT_BYTES`] are in hand, the body ends, or the deadline;
/// then drops the rest with the connection.
async fn read_excerpt<B>(mut body: B, deadline: Instant) -> String
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    let room = EXCERPT_BYTES - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            // The answer's status stands even if its body stalls or breaks off.
            Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    excerpt(&kept)
}

/// `bytes` as text: invalid UTF-8 replaced, a character cut at the end dropped.
fn excerpt(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(error) if error.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..error.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as the answer gave it: delay seconds, or an
/// HTTP date to wait until. The wait is worked out against the engine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    Delay(Duration),
    Until(SystemTime),
}

impl RetryAfter {
    /// Reads a header value; anything unreadable is ignored.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits for a u64 is still "a very long time".
            let secs = value.parse().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(value).ok().map(RetryAfter::Until)
    }

    /// How long to wait from `now`. A date in the past means no wait.
    pub fn wait_from(self, now: SystemTime) -> Duration {
        match self {
            RetryAfter::Delay(delay) => delay,
            RetryAfter::Until(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

fn timed_out(timeout: Duration) -> Failure {
    Failure::new(
        ErrorKind::Timeout,
        format!("no complete answer within {} ms", timeout.as_millis()),
    )
}

/// Sorts a failed request by the first recognisable cause in its chain of sources.
fn classify(error: &hyper_util::client::legacy::Error) -> Failure {
    let detail = describe(error);
    for cause in causes(error) {
        if let Some(refusal) = cause.downcast_ref::<Refused>() {
            return Failure::new(ErrorKind::SsrfRefused, refusal.to_string());
        }
        if let Some(kind) = kind_of(cause) {
            return Failure::new(kind, detail);
        }
    }
    if in_tls_handshake(error) {
        // Connected, then the peer hung up or reset before TLS was set up: most often a
        // port that speaks no TLS. Saying "tls" sends the user to the right place.
        return Failure::new(ErrorKind::Tls, format!("tls handshake failed: {detail}"));
    }
    Failure::new(ErrorKind::Connection, detail)
}

/// Whether `error` broke the TLS handshake, after the TCP connection was made. The TLS
/// layer reports handshake failures as an `io::Error` right under the client's connect
/// error; the TCP connector's own failures (refused, unreachable, DNS) come wrapped in its
/// `ConnectError` instead. The hostile-receiver tests pin this down.
fn in_tls_handshake(error: &hyper_util::client::legacy::Error) -> bool {
    error.is_connect()
        && error
            .source()
            .is_some_and(|source| source.is::<std::io::Error>())
}

/// `error` and its sources. An `io::Error` wrapping another error is followed into it:
/// its own `source()` would skip the wrapped error.
fn causes<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&current| {
        match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => current.source(),
        }
    })
}

fn kind_of(error: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if error.is::<Refused>() {
        Some(ErrorKind::SsrfRefused)
    } else if error.is::<DnsFailure>() {
        Some(ErrorKind::Dns)
    } else if error.is::<rustls::Error>() {
        Some(ErrorKind::Tls)
    } else {
        match error.downcast_ref::<std::io::Error>()?.kind() {
            std::io::ErrorKind::ConnectionRefused => Some(ErrorKind::ConnectionRefused),
            std::io::ErrorKind::TimedOut => Some(ErrorKind::Timeout),
            _ => None,
        }
    }
}

/// The messages of an error and its causes, joined, without repeats, bounded.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(error) {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    let mut detail = parts.join(": ");
    if detail.len() > DETAIL_CHARS {
        let cut = (0..=DETAIL_CHARS)
            .rev()
            .find(|&i| detail.is_char_boundary(i))
            .unwrap_or(0);
        detail.truncate(cut);
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
        RetryAfter::parse(value).map(|retry_after| retry_after.wait_from(now))
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for invalid in ["", "-5", "1.5", "+3", "soon", "12 s"] {
            assert_eq!(parse_retry_after(invalid, now), None, "{invalid:?}");
        }
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let before = date - Duration::from_secs(90);
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(text, before),
                Some(Duration::from_secs(90)),
                "{text}"
            );
        }
        let after = date + Duration::from_secs(5);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", after),
            Some(Duration::ZERO),
            "a date in the past asks for no wait"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", before),
            None
        );
    }

    #[test]
    fn excerpts_cut_cleanly() {
        assert_eq!(excerpt(b"plain"), "plain");
        let euro = "€".as_bytes();
        assert_eq!(
            excerpt(&[b'a', euro[0], euro[1]]),
            "a",
            "a cut character is dropped"
        );
        assert_eq!(excerpt(&[b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn urls_are_parsed_once_and_refusals_are_not_kept() {
        let client = HttpClient::trusted().unwrap();
        let url = "http://127.0.0.1:9/hook?a=1";
        let first = client.parse(url).unwrap();
        assert_eq!(client.parse(url).unwrap(), first);
        assert_eq!(client.parsed.len(), 1);
        for _ in 0..2 {
            let refused = client.parse("ftp://example.test/hook").unwrap_err();
            assert_eq!(refused.kind, ErrorKind::InvalidUrl);
            assert!(
                refused.detail.contains("is not http or https"),
                "{refused:?}"
            );
        }
        assert_eq!(client.parsed.len(), 1);
    }

    #[test]
    fn credentials_become_basic_authorization_and_leave_the_target() {
        let client = HttpClient::trusted().unwrap();
        let target = client
            .parse("https://ml%40team:p%3Ass@hooks.example.com:8443/in?x=1")
            .unwrap();
        assert_eq!(
            target.uri.to_string(),
            "https://hooks.example.com:8443/in?x=1"
        );
        // base64("ml@team:p:ss")
        assert_eq!(target.authorization.unwrap(), "Basic bWxAdGVhbTpwOnNz");
        let bare = client.parse("https://hooks.example.com/in").unwrap();
        assert_eq!(bare.authorization, None);
        let user_only = client.parse("http://bot@10.0.0.1/").unwrap();
        assert_eq!(user_only.authorization.unwrap(), "Basic Ym90Og==");
        assert_eq!(user_only.literal, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ip_literals_are_recognised() {
        let literal = |url: &str| literal_ip(&url::Url::parse(url).unwrap());
        assert_eq!(
            literal("http://127.0.0.1:8080/x"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal("http://[::1]/"), Some("::1".parse().unwrap()));
        assert_eq!(
            literal("http://2130706433/"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            literal("http://0x7f.1/"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal("https://example.com/"), None);
    }
}
