//! Hostile receivers: every attempt ends within the attempt timeout and a small margin,
//! keeps at most an excerpt of what it is sent, and is recorded with what went wrong,
//! however the endpoint misbehaves.

use std::time::Duration;

use hookline_core::model::{Attempt, ErrorKind, MessageStatus};
use hookline_engine::EngineConfig;
use tokio::time::Instant;

use crate::support::{HUGE_BODY, Hostile, Misbehaviour, World, config, eventually, resident_bytes};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// What an attempt may take beyond its timeout: recording it, and a loaded test machine.
const MARGIN: Duration = Duration::from_secs(1);
/// The most of an answer's body an attempt keeps (the engine's `EXCERPT_BYTES`).
const EXCERPT_BYTES: usize = 4096;
/// How much this process may grow while one attempt meets a hostile receiver: far from
/// the 100 MB one of them sends.
const MEMORY_GROWTH: usize = 24 * 1024 * 1024;

/// One attempt to `url`, as recorded, with how long it took from the message's creation
/// to its record, and how much the process grew meanwhile.
struct Outcome {
    attempt: Attempt,
    status: MessageStatus,
    took: Duration,
    grew: usize,
}

async fn attempt_once(url: &str) -> Outcome {
    let world = World::new().await;
    let endpoint = world.endpoint(url, |_| {}).await;
    let engine = world.start(EngineConfig {
        attempt_timeout: ATTEMPT_TIMEOUT,
        ..config(&[])
    });
    let before = resident_bytes();
    let created = Instant::now();
    let message = world.message(r#"{"hostile":true}"#).await;
    engine.wake.notify_one();
    let attempt = eventually(
        "the attempt to be recorded",
        Duration::from_secs(10),
        || async { world.attempts(&message).await.into_iter().next() },
    )
    .await;
    let took = created.elapsed();
    let grew = resident_bytes().saturating_sub(before);
    let status = world.destination(&message, &endpoint).await.status;
    engine.stop().await;
    Outcome {
        attempt,
        status,
        took,
        grew,
    }
}

/// Checks what every hostile case must hold: bounded in time and memory.
fn assert_bounded(outcome: &Outcome) {
    assert!(
        outcome.took < ATTEMPT_TIMEOUT + MARGIN,
        "the attempt took {:?} to end and be recorded",
        outcome.took
    );
    let duration = Duration::from_millis(outcome.attempt.response_duration_ms as u64);
    assert!(duration <= ATTEMPT_TIMEOUT + MARGIN, "{duration:?}");
    let kept = outcome.attempt.response.as_deref().unwrap_or("").len();
    assert!(kept <= EXCERPT_BYTES, "{kept} bytes of response kept");
    assert!(
        outcome.grew < MEMORY_GROWTH,
        "the process grew by {} MiB",
        outcome.grew / (1024 * 1024)
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let hostile = Hostile::start(Misbehaviour::SlowHeaders).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(outcome.attempt.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(outcome.attempt.response_status_code, 0);
    assert_eq!(outcome.status, MessageStatus::Fail);
    let duration = Duration::from_millis(outcome.attempt.response_duration_ms as u64);
    assert!(duration >= ATTEMPT_TIMEOUT, "gave up after {duration:?}");
    assert_eq!(hostile.connections(), 1);
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_at_the_excerpt_and_the_connection_dropped() {
    let hostile = Hostile::start(Misbehaviour::EndlessBody).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    // The status stands: the receiver said 200 before it started streaming.
    assert_eq!(outcome.attempt.response_status_code, 200);
    assert_eq!(outcome.attempt.error_kind, None);
    assert_eq!(outcome.status, MessageStatus::Success);
    let excerpt = outcome.attempt.response.unwrap_or_default();
    assert_eq!(
        excerpt.len(),
        EXCERPT_BYTES,
        "the excerpt is full, and no more"
    );
    assert!(excerpt.bytes().all(|b| b == b'y'));
    // The client hung up rather than reading on in the background.
    eventually(
        "the receiver to see the client go",
        ATTEMPT_TIMEOUT,
        || async { hostile.ended() },
    )
    .await;
    let written = hostile.written();
    assert!(written < 32 * 1024 * 1024, "{written} bytes were taken");
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_answer_is_a_connection_failure() {
    let hostile = Hostile::start(Misbehaviour::ResetMidResponse).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(outcome.attempt.error_kind, Some(ErrorKind::Connection));
    assert_eq!(outcome.attempt.response_status_code, 0);
    assert_eq!(outcome.status, MessageStatus::Fail);
    let detail = outcome.attempt.response.unwrap_or_default();
    assert!(!detail.is_empty(), "the failure is described");
    assert!(detail.len() <= 512, "{detail}");
}

#[tokio::test]
async fn a_100_mb_answer_is_read_only_as_far_as_the_excerpt() {
    let hostile = Hostile::start(Misbehaviour::HugeBody).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(outcome.attempt.response_status_code, 200);
    assert_eq!(outcome.status, MessageStatus::Success);
    assert_eq!(
        outcome.attempt.response.unwrap_or_default().len(),
        EXCERPT_BYTES
    );
    eventually(
        "the receiver to see the client go",
        ATTEMPT_TIMEOUT,
        || async { hostile.ended() },
    )
    .await;
    let written = hostile.written();
    assert!(
        written < HUGE_BODY / 4,
        "{written} of {HUGE_BODY} bytes were taken"
    );
}

#[tokio::test]
async fn https_to_a_server_that_speaks_no_tls_is_a_tls_failure() {
    let hostile = Hostile::start(Misbehaviour::TlsGarbage).await;
    let outcome = attempt_once(&hostile.https_url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(outcome.attempt.error_kind, Some(ErrorKind::Tls));
    assert_eq!(outcome.attempt.response_status_code, 0);
    assert_eq!(outcome.status, MessageStatus::Fail);
    assert_eq!(hostile.connections(), 1);
}

#[tokio::test]
async fn https_to_a_server_that_closes_at_once_is_a_tls_failure() {
    let hostile = Hostile::start(Misbehaviour::TlsClose).await;
    let outcome = attempt_once(&hostile.https_url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(
        outcome.attempt.error_kind,
        Some(ErrorKind::Tls),
        "{:?}",
        outcome.attempt.response
    );
    assert_eq!(outcome.status, MessageStatus::Fail);
    let detail = outcome.attempt.response.unwrap_or_default();
    assert!(detail.starts_with("tls handshake failed"), "{detail}");
}

#[tokio::test]
async fn headers_that_never_end_are_refused_within_a_bounded_read() {
    let hostile = Hostile::start(Misbehaviour::EndlessHeaders).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    assert_eq!(outcome.attempt.error_kind, Some(ErrorKind::Connection));
    assert_eq!(outcome.attempt.response_status_code, 0);
    assert_eq!(outcome.status, MessageStatus::Fail);
    let detail = outcome.attempt.response.unwrap_or_default();
    assert!(detail.contains("too large"), "{detail}");
    // hyper gives up on a head past its buffer (about 400 KiB), not at the timeout.
    let written = hostile.written();
    assert!(
        written < 2 * 1024 * 1024,
        "{written} bytes of headers were read"
    );
}

#[tokio::test]
async fn a_trickling_body_ends_at_the_attempt_timeout_with_what_came() {
    let hostile = Hostile::start(Misbehaviour::TrickleBody).await;
    let outcome = attempt_once(&hostile.url("/")).await;
    assert_bounded(&outcome);
    // The status stands; the body is what came before the deadline.
    assert_eq!(outcome.attempt.response_status_code, 200);
    assert_eq!(outcome.attempt.error_kind, None);
    let excerpt = outcome.attempt.response.unwrap_or_default();
    assert!(
        !excerpt.is_empty() && excerpt.bytes().all(|b| b == b't'),
        "{excerpt:?}"
    );
    let duration = Duration::from_millis(outcome.attempt.response_duration_ms as u64);
    assert!(
        duration >= ATTEMPT_TIMEOUT,
        "read until the deadline, not {duration:?}"
    );
}
