//! The SSRF guard and the ways a request can fail without an answer.

use std::time::Duration;

use hookline_core::model::{Attempt, ErrorKind, MessageStatus};
use hookline_engine::{Cidr, EngineConfig};

use crate::support::{Receiver, Reply, World, config, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// Delivers one message to `url` with `config` (no retries) and returns its one attempt.
async fn one_attempt(url: &str, config: EngineConfig) -> Attempt {
    let world = World::new().await;
    let endpoint = world.endpoint(url, |_| {}).await;
    let message = world.message(r#"{"probe":true}"#).await;
    let engine = world.start(config);
    let destination = eventually("the attempt to be recorded", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Fail || destination.status == MessageStatus::Success)
            .then_some(destination)
    })
    .await;
    engine.stop().await;
    let mut attempts = world.attempts(&message).await;
    assert_eq!(attempts.len(), 1, "{destination:?}");
    attempts.remove(0)
}

fn without_allow_list() -> EngineConfig {
    EngineConfig {
        allowed_subnets: Vec::new(),
        ..config(&[])
    }
}

#[tokio::test]
async fn loopback_is_refused_without_the_allow_list() {
    let receiver = Receiver::always(Reply::status(200)).await;
    for url in [
        receiver.url("/literal"),
        format!("http://localhost:{}/by-name", receiver.addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/mapped", receiver.addr.port()),
    ] {
        let attempt = one_attempt(&url, without_allow_list()).await;
        assert_eq!(attempt.error_kind, Some(ErrorKind::SsrfRefused), "{url}");
        assert_eq!(attempt.status, MessageStatus::Fail);
        assert_eq!(attempt.response_status_code, 0);
        let detail = attempt.response.unwrap_or_default();
        assert!(detail.contains("loopback"), "{url}: {detail}");
        if url.contains("localhost") {
            // What a name resolved to is the operator's business, not the endpoint owner's.
            assert!(
                !detail.contains("127.0.0.1") && !detail.contains("::1"),
                "{url}: {detail}"
            );
            assert!(
                detail.contains("localhost: it resolves to"),
                "{url}: {detail}"
            );
        }
    }
    assert_eq!(receiver.count(), 0, "no request was sent");
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused() {
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://[fd00::1]/",
    ] {
        let attempt = one_attempt(url, without_allow_list()).await;
        assert_eq!(attempt.error_kind, Some(ErrorKind::SsrfRefused), "{url}");
    }
}

#[tokio::test]
async fn the_allow_list_opens_loopback_by_name_to_the_checked_address() {
    let receiver = Receiver::always(Reply::status(200)).await;
    // `localhost` may resolve to ::1 first; only 127.0.0.0/8 is allowed, so only
    // 127.0.0.1 (where the receiver listens) may be connected to.
    let config = EngineConfig {
        allowed_subnets: vec!["127.0.0.0/8".parse::<Cidr>().unwrap()],
        ..config(&[])
    };
    let url = format!("http://localhost:{}/named", receiver.addr.port());
    let attempt = one_attempt(&url, config).await;
    assert_eq!(
        attempt.status,
        MessageStatus::Success,
        "{:?}",
        attempt.response
    );
    assert_eq!(receiver.received()[0].path, "/named");
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let receiver = Receiver::always(Reply::status(200).delay(Duration::from_secs(3))).await;
    let config = EngineConfig {
        attempt_timeout: Duration::from_millis(400),
        ..config(&[])
    };
    let attempt = one_attempt(&receiver.url("/slow"), config).await;
    assert_eq!(attempt.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(attempt.response_status_code, 0);
    assert!(
        (400..2500).contains(&attempt.response_duration_ms),
        "{} ms",
        attempt.response_duration_ms
    );
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let attempt = one_attempt(&format!("http://127.0.0.1:{port}/"), config(&[])).await;
    assert_eq!(attempt.error_kind, Some(ErrorKind::ConnectionRefused));
    assert_eq!(attempt.response_status_code, 0);
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_tls_failure() {
    let receiver = Receiver::always(Reply::status(200)).await;
    let url = format!("https://127.0.0.1:{}/", receiver.addr.port());
    let attempt = one_attempt(&url, config(&[])).await;
    assert_eq!(
        attempt.error_kind,
        Some(ErrorKind::Tls),
        "{:?}",
        attempt.response
    );
}

#[tokio::test]
async fn a_url_that_is_not_http_is_invalid() {
    let attempt = one_attempt("ftp://127.0.0.1/file", config(&[])).await;
    assert_eq!(attempt.error_kind, Some(ErrorKind::InvalidUrl));
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_dns_failure() {
    // `.invalid` never resolves (RFC 6761).
    let attempt = one_attempt("http://no-such-host.invalid/hook", config(&[])).await;
    assert_eq!(
        attempt.error_kind,
        Some(ErrorKind::Dns),
        "{:?}",
        attempt.response
    );
    let detail = attempt.response.unwrap_or_default();
    assert!(detail.contains("no-such-host.invalid"), "{detail}");
}
