//! Known-answer vectors for every scheme, one test per verification failure, and property
//! tests. The vectors come from the providers' documentation where they publish one
//! (Standard Webhooks, GitHub, Slack) and from an independent HMAC (Python's `hmac`) else.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use super::*;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TIMESTAMP: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

fn keys(scheme: Scheme, secrets: &[&str]) -> Keyset {
    Keyset::new(scheme, secrets).expect("valid secrets")
}

fn at(now: i64) -> VerifyOptions {
    VerifyOptions::default().now(now)
}

fn sw_headers(signature: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", SW_ID.to_owned()),
        ("webhook-timestamp", SW_TIMESTAMP.to_string()),
        ("webhook-signature", signature.to_owned()),
    ]
}

#[test]
fn standard_webhooks_reference_vector() {
    let keyset = keys(Scheme::Standard, &[SW_SECRET]);
    let signed = keyset
        .sign(&Message {
            id: SW_ID,
            timestamp: SW_TIMESTAMP,
            body: SW_BODY,
        })
        .unwrap();
    assert_eq!(signed, sw_headers(SW_SIGNATURE));
    let verified = keyset
        .verify(&sw_headers(SW_SIGNATURE), SW_BODY, at(SW_TIMESTAMP))
        .unwrap();
    assert_eq!(verified.id.as_deref(), Some(SW_ID));
    assert_eq!(verified.timestamp, Some(SW_TIMESTAMP));
}

#[test]
fn svix_names_and_fallback_to_webhook_names() {
    let keyset = keys(Scheme::Svix, &[SW_SECRET]);
    let signed = keyset
        .sign(&Message {
            id: SW_ID,
            timestamp: SW_TIMESTAMP,
            body: SW_BODY,
        })
        .unwrap();
    assert_eq!(signed[0], ("svix-id", SW_ID.to_owned()));
    assert_eq!(signed[2], ("svix-signature", SW_SIGNATURE.to_owned()));
    assert!(keyset.verify(&signed, SW_BODY, at(SW_TIMESTAMP)).is_ok());
    assert!(
        keyset
            .verify(&sw_headers(SW_SIGNATURE), SW_BODY, at(SW_TIMESTAMP))
            .is_ok()
    );
}

#[test]
fn openai_raw_secret_vector() {
    let keyset = keys(Scheme::OpenAi, &["raw-openai-secret-value"]);
    let headers = [
        ("webhook-id", "wh_1"),
        ("webhook-timestamp", "1700000000"),
        (
            "webhook-signature",
            "v1,JVkwddRZa2byoFShmtKWlcXeDzr3x7ZiG51T89vQImI=",
        ),
    ];
    let body = br#"{"type":"response.completed"}"#;
    assert!(keyset.verify(&headers, body, at(1_700_000_000)).is_ok());
    // The same text under the standard scheme is base64, and decodes to other key bytes.
    assert!(Keyset::new(Scheme::Standard, ["raw-openai-secret-value"]).is_err());
}

#[test]
fn openai_and_replicate_accept_whsec_like_standard() {
    for scheme in [Scheme::OpenAi, Scheme::Replicate] {
        let keyset = keys(scheme, &[SW_SECRET]);
        assert!(
            keyset
                .verify(&sw_headers(SW_SIGNATURE), SW_BODY, at(SW_TIMESTAMP))
                .is_ok(),
            "{scheme}"
        );
    }
}

#[test]
fn replicate_checks_no_timestamp_unless_asked() {
    let keyset = keys(Scheme::Replicate, &[SW_SECRET]);
    let headers = sw_headers(SW_SIGNATURE);
    let years_later = SW_TIMESTAMP + 5 * 365 * 86_400;
    assert!(keyset.verify(&headers, SW_BODY, at(years_later)).is_ok());
    let strict = at(years_later).tolerance(Tolerance::Within(Duration::from_secs(300)));
    assert!(matches!(
        keyset.verify(&headers, SW_BODY, strict),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn github_documented_example() {
    let keyset = keys(Scheme::Github, &["It's a Secret to Everybody"]);
    let signed = keyset
        .sign(&Message {
            id: "d0b6e1a2-0000-4000-8000-000000000000",
            timestamp: 0,
            body: b"Hello, World!",
        })
        .unwrap();
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(signed.header("x-hub-signature-256"), Some(expected));
    let verified = keyset
        .verify(&signed, b"Hello, World!", VerifyOptions::default())
        .unwrap();
    assert_eq!(
        verified.id.as_deref(),
        Some("d0b6e1a2-0000-4000-8000-000000000000")
    );
}

#[test]
fn stripe_vector_with_rotation() {
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let expected = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";
    let keyset = keys(Scheme::Stripe, &["whsec_test_secret", "whsec_older_secret"]);
    let signed = keyset
        .sign(&Message {
            id: "evt_1",
            timestamp: 1_700_000_000,
            body,
        })
        .unwrap();
    let header = signed.header("stripe-signature").unwrap();
    assert!(header.starts_with(&format!("t=1700000000,v1={expected},v1=")));
    // A verifier holding only the older secret still accepts.
    let older = keys(Scheme::Stripe, &["whsec_older_secret"]);
    assert_eq!(
        older
            .verify(&signed, body, at(1_700_000_000))
            .unwrap()
            .timestamp,
        Some(1_700_000_000)
    );
}

#[test]
fn slack_documented_example() {
    let keyset = keys(Scheme::Slack, &["8f742231b10e8888abcd99yyyzzz85a5"]);
    let headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert!(
        keyset
            .verify(&headers, SLACK_BODY, at(1_531_420_618))
            .is_ok()
    );
    let signed = keyset
        .sign(&Message {
            id: "unused",
            timestamp: 1_531_420_618,
            body: SLACK_BODY,
        })
        .unwrap();
    assert_eq!(signed.header("x-slack-signature"), Some(headers[1].1));
}

#[test]
fn shopify_vector() {
    let keyset = keys(Scheme::Shopify, &["shpss_secret"]);
    let headers = [(
        "X-Shopify-Hmac-Sha256",
        "xocA3LkeJ/RvNrkxep1EUtFHuj7rIoIqZYaLU26LyPQ=",
    )];
    assert!(
        keyset
            .verify(&headers, br#"{"id":1}"#, VerifyOptions::default())
            .is_ok()
    );
}

#[test]
fn huggingface_compares_the_plain_secret() {
    let keyset = keys(Scheme::HuggingFace, &["old-secret", "new-secret"]);
    let ok = [("X-Webhook-Secret", "new-secret")];
    assert_eq!(
        keyset
            .verify(&ok, b"{}", VerifyOptions::default())
            .unwrap()
            .key_index,
        1
    );
    let wrong = [("X-Webhook-Secret", "new-secreT")];
    assert_eq!(
        keyset.verify(&wrong, b"{}", VerifyOptions::default()),
        Err(VerifyError::NoMatch {
            signatures: 1,
            keys: 2
        })
    );
}

#[test]
fn ed25519_signs_v1a_next_to_v1_during_rotation() {
    let (secret, public) = ed25519_keypair_from_seed(&[42; 32]);
    let signer = keys(Scheme::Standard, &[SW_SECRET, &secret]);
    let message = Message {
        id: SW_ID,
        timestamp: SW_TIMESTAMP,
        body: SW_BODY,
    };
    let signed = signer.sign(&message).unwrap();
    let signature = signed.header("webhook-signature").unwrap();
    assert!(signature.starts_with(&format!("{SW_SIGNATURE} v1a,")));
    let by_public = keys(Scheme::Standard, &[&public]);
    assert!(by_public.verify(&signed, SW_BODY, at(SW_TIMESTAMP)).is_ok());
    assert_eq!(
        by_public.sign(&message),
        Err(SignError::PublicKeyOnly { index: 0 })
    );
    let tampered = by_public.verify(&signed, b"{\"test\": 2432232315}", at(SW_TIMESTAMP));
    assert_eq!(
        tampered,
        Err(VerifyError::NoMatch {
            signatures: 2,
            keys: 1
        })
    );
}

#[test]
fn each_failure_is_precise() {
    let keyset = keys(Scheme::Standard, &[SW_SECRET]);
    let verify = |headers: &[(&str, String)], now: i64| keyset.verify(headers, SW_BODY, at(now));

    let mut missing = sw_headers(SW_SIGNATURE);
    missing.remove(2);
    assert_eq!(
        verify(&missing, SW_TIMESTAMP),
        Err(VerifyError::MissingHeader("webhook-signature".into()))
    );
    assert_eq!(
        verify(&sw_headers("garbage"), SW_TIMESTAMP),
        Err(VerifyError::MalformedHeader {
            name: "webhook-signature".into(),
            reason: "expected space-separated `v1,<base64>` entries".into()
        })
    );
    let mut bad_timestamp = sw_headers(SW_SIGNATURE);
    bad_timestamp[1].1 = "2021-02-25T15:02:10Z".to_owned();
    assert_eq!(
        verify(&bad_timestamp, SW_TIMESTAMP),
        Err(VerifyError::InvalidTimestamp {
            header: "webhook-timestamp",
            value: "2021-02-25T15:02:10Z".to_owned()
        })
    );
    let too_old = verify(&sw_headers(SW_SIGNATURE), SW_TIMESTAMP + 420).unwrap_err();
    assert_eq!(
        too_old,
        VerifyError::TimestampTooOld {
            age_secs: 420,
            tolerance_secs: 300
        }
    );
    assert_eq!(
        too_old.to_string(),
        "timestamp too old: 420 s old, 120 s beyond the 300 s tolerance"
    );
    assert_eq!(
        verify(&sw_headers(SW_SIGNATURE), SW_TIMESTAMP - 301),
        Err(VerifyError::TimestampTooNew {
            ahead_secs: 301,
            tolerance_secs: 300
        })
    );
    let two = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SW_SIGNATURE}");
    let other_key = keys(
        Scheme::Standard,
        &["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
    );
    assert_eq!(
        other_key.verify(&sw_headers(&two), SW_BODY, at(SW_TIMESTAMP)),
        Err(VerifyError::NoMatch {
            signatures: 2,
            keys: 1
        })
    );
    assert_eq!(
        verify(&sw_headers(&two), SW_TIMESTAMP).map(|v| v.key_index),
        Ok(0),
        "any one matching entry is enough"
    );
    assert_eq!(
        super::verify(
            Scheme::Standard,
            [SW_SECRET, "whsec_!!"],
            &sw_headers(SW_SIGNATURE),
            SW_BODY,
            at(SW_TIMESTAMP)
        ),
        Err(VerifyError::MalformedSecret {
            index: 1,
            source: SecretError::InvalidBase64 { prefix: "whsec_" }
        })
    );
}

#[test]
fn tolerance_edges_are_inclusive() {
    let keyset = keys(Scheme::Standard, &[SW_SECRET]);
    let headers = sw_headers(SW_SIGNATURE);
    assert!(
        keyset
            .verify(&headers, SW_BODY, at(SW_TIMESTAMP + 300))
            .is_ok()
    );
    assert!(
        keyset
            .verify(&headers, SW_BODY, at(SW_TIMESTAMP - 300))
            .is_ok()
    );
    assert!(
        keyset
            .verify(&headers, SW_BODY, at(SW_TIMESTAMP + 301))
            .is_err()
    );
    let disabled = at(SW_TIMESTAMP + 1_000_000).tolerance(Tolerance::Disabled);
    assert!(keyset.verify(&headers, SW_BODY, disabled).is_ok());
}

#[test]
fn stripe_refuses_only_stale_timestamps() {
    let keyset = keys(Scheme::Stripe, &["whsec_test_secret"]);
    let body = b"{}";
    let signed = keyset
        .sign(&Message {
            id: "evt",
            timestamp: 1_700_000_000,
            body,
        })
        .unwrap();
    assert!(
        keyset
            .verify(&signed, body, at(1_700_000_000 - 86_400))
            .is_ok()
    );
    assert_eq!(
        keyset.verify(&signed, body, at(1_700_000_301)),
        Err(VerifyError::TimestampTooOld {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
    let no_v1 = [("Stripe-Signature", "t=1700000000,v0=abcd")];
    assert_eq!(
        keyset.verify(&no_v1, body, at(1_700_000_000)),
        Err(VerifyError::MalformedHeader {
            name: "stripe-signature".into(),
            reason: "no `v1=` signature".into()
        })
    );
}

#[test]
fn provider_headers_are_format_checked() {
    let github = keys(Scheme::Github, &["s3cret"]);
    assert_eq!(
        github.verify(
            &[("X-Hub-Signature-256", "sha1=abc")],
            b"x",
            VerifyOptions::default()
        ),
        Err(VerifyError::MalformedHeader {
            name: "x-hub-signature-256".into(),
            reason: "expected `sha256=` and 64 hex digits".into()
        })
    );
    let slack = keys(Scheme::Slack, &["s3cret"]);
    assert_eq!(
        slack.verify(
            &[("X-Slack-Signature", "v0=00")],
            b"x",
            VerifyOptions::default()
        ),
        Err(VerifyError::MissingHeader(
            "x-slack-request-timestamp".into()
        ))
    );
}

#[test]
fn scheme_names_round_trip() {
    for scheme in Scheme::ALL {
        assert_eq!(scheme.name().parse::<Scheme>(), Ok(scheme));
    }
    assert_eq!("hugging-face".parse::<Scheme>(), Ok(Scheme::HuggingFace));
    assert_eq!("open_ai".parse::<Scheme>(), Ok(Scheme::OpenAi));
    assert!("webhooks".parse::<Scheme>().is_err());
}

#[test]
fn ids_that_would_make_signed_content_ambiguous_are_refused() {
    let keyset = keys(Scheme::Standard, &[SW_SECRET]);
    for id in ["", "a.b", "a b", "a\nb"] {
        let message = Message {
            id,
            timestamp: 1,
            body: b"",
        };
        assert_eq!(keyset.sign(&message), Err(SignError::InvalidId), "{id:?}");
    }
}

fn secret_for(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Github | Scheme::Stripe | Scheme::Slack | Scheme::Shopify => "plain-secret-1",
        Scheme::HuggingFace => "hf-secret",
        _ => SW_SECRET,
    }
}

proptest! {
    #[test]
    fn arbitrary_headers_never_panic(
        scheme in proptest::sample::select(Scheme::ALL.to_vec()),
        headers in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id",
                    "svix-timestamp", "svix-signature", "x-hub-signature-256",
                    "stripe-signature", "x-slack-signature", "x-slack-request-timestamp",
                    "x-shopify-hmac-sha256", "x-webhook-secret",
                ]),
                ".{0,120}",
            ),
            0..8,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let keyset = keys(scheme, &[secret_for(scheme)]);
        let _ = keyset.verify(&headers, &body, at(now));
    }

    #[test]
    fn sign_then_verify_holds_and_any_change_fails(
        scheme in proptest::sample::select(Scheme::ALL.to_vec()),
        id in "[a-zA-Z0-9_-]{1,40}",
        timestamp in 0i64..4_000_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let keyset = keys(scheme, &[secret_for(scheme)]);
        let message = Message { id: &id, timestamp, body: &body };
        let headers = keyset.sign(&message).unwrap();
        let verified = keyset.verify(&headers, &body, at(timestamp)).unwrap();
        prop_assert_eq!(verified.key_index, 0);

        if scheme != Scheme::HuggingFace && !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1 << bit;
            prop_assert!(keyset.verify(&headers, &changed, at(timestamp)).is_err());
        }
        if matches!(scheme, Scheme::Standard | Scheme::Svix | Scheme::OpenAi | Scheme::Replicate) {
            let mut other_id = headers.clone();
            other_id[0].1.push('x');
            prop_assert!(keyset.verify(&other_id, &body, at(timestamp)).is_err());
        }
        if scheme.has_timestamp() {
            let shifted = keyset.sign(&Message { timestamp: timestamp + 1, ..message }).unwrap();
            let mut spliced = headers.clone();
            for (name, value) in spliced.iter_mut() {
                if name.ends_with("timestamp") {
                    *value = shifted.header(name).unwrap().to_owned();
                }
                if *name == "stripe-signature" {
                    *value = value.replacen(&format!("t={timestamp}"), &format!("t={}", timestamp + 1), 1);
                }
            }
            prop_assert!(keyset.verify(&spliced, &body, at(timestamp)).is_err());
        }
    }
}

// Property tests of every verifier against hostile input: header values that are empty,
// huge, non-ASCII or almost well-formed; arbitrary bodies, clocks and secrets. Nothing may
// panic, a request signed and left alone always verifies, and a flipped body bit never does.

/// Every header name any verifier reads, some in other cases, and one nobody reads.
const HEADER_NAMES: [&str; 17] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "Svix-Timestamp",
    "svix-signature",
    "X-Hub-Signature-256",
    "x-github-delivery",
    "stripe-signature",
    "x-slack-signature",
    "X-Slack-Request-Timestamp",
    "x-shopify-hmac-sha256",
    "x-webhook-secret",
    "authorization",
    "x-sig",
    "X-SIG",
    "x-unrelated",
];

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        ".{0,120}",
        "[ -~]{0,200}",
        (
            proptest::sample::select(vec![
                "sha256=",
                "SHA256=",
                "sha1=",
                "v0=",
                "v1,",
                "v1a,",
                "t=",
                "t=1700000000,v1=",
                "Basic ",
                "bearer ",
                " ",
            ]),
            "[0-9a-fA-F+/=, .é-]{0,140}",
        )
            .prop_map(|(head, tail)| format!("{head}{tail}")),
        (any::<char>(), 1usize..40_000).prop_map(|(c, n)| c.to_string().repeat(n)),
        "[A-Za-z0-9+/=]{500,3000}",
    ]
}

fn hostile_headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(HEADER_NAMES.to_vec()),
            header_value(),
        ),
        0..8,
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

/// Secrets of every shape: arbitrary text, and (mostly, so that round trips of every
/// scheme are common) well-formed keys of each kind.
fn any_secret() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => ".{0,60}",
        1 => "\\PC{1,300}",
        1 => proptest::collection::vec(any::<u8>(), 0..80)
            .prop_map(|bytes| hmac_secret_from_bytes(&bytes)),
        6 => proptest::collection::vec(any::<u8>(), MIN_HMAC_KEY_LEN..64)
            .prop_map(|bytes| hmac_secret_from_bytes(&bytes)),
        1 => any::<[u8; 32]>().prop_map(|seed| ed25519_keypair_from_seed(&seed).0),
        1 => any::<[u8; 32]>().prop_map(|seed| ed25519_keypair_from_seed(&seed).1),
    ]
}

fn tolerance() -> impl Strategy<Value = Tolerance> {
    prop_oneof![
        Just(Tolerance::SchemeDefault),
        Just(Tolerance::Disabled),
        any::<u64>().prop_map(|secs| Tolerance::Within(Duration::from_secs(secs))),
    ]
}

fn hmac_rule() -> impl Strategy<Value = Result<hmac::HmacRule, SecretError>> {
    (
        proptest::sample::select(hmac::Algorithm::ALL.to_vec()),
        proptest::sample::select(hmac::Encoding::ALL.to_vec()),
        proptest::option::of(".{0,12}"),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
    )
        .prop_map(|(algorithm, encoding, prefix, secrets)| {
            hmac::HmacRule::new("X-Sig", algorithm, encoding, prefix.as_deref(), secrets)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_scheme_survives_hostile_headers(
        scheme in proptest::sample::select(Scheme::ALL.to_vec()),
        headers in hostile_headers(),
        body in body(),
        now in any::<i64>(),
        tolerance in tolerance(),
    ) {
        let keyset = keys(scheme, &[secret_for(scheme)]);
        let _ = keyset.verify(&headers, &body, at(now).tolerance(tolerance));
    }

    #[test]
    fn any_secrets_sign_and_verify_or_are_refused(
        scheme in proptest::sample::select(Scheme::ALL.to_vec()),
        secrets in proptest::collection::vec(any_secret(), 1..4),
        headers in hostile_headers(),
        id in "[a-zA-Z0-9_-]{1,40}",
        timestamp in 0i64..4_000_000_000,
        body in body(),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        prop_assert_eq!(Keyset::new(scheme, Vec::<String>::new()).unwrap_err(), SecretError::Empty);
        let _ = super::verify(scheme, &secrets, &headers, &body, at(timestamp));
        let Ok(keyset) = Keyset::new(scheme, &secrets) else {
            return Ok(());
        };
        let _ = keyset.verify(&headers, &body, at(timestamp));
        let signed = match keyset.sign(&Message { id: &id, timestamp, body: &body }) {
            Ok(signed) => signed,
            Err(SignError::PublicKeyOnly { .. }) => return Ok(()),
            Err(error) => return Err(TestCaseError::fail(error.to_string())),
        };
        let verified = keyset.verify(&signed, &body, at(timestamp));
        prop_assert_eq!(verified.map(|v| v.key_index), Ok(0));
        if scheme != Scheme::HuggingFace && !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1 << bit;
            prop_assert!(keyset.verify(&signed, &changed, at(timestamp)).is_err());
        }
    }

    #[test]
    fn hmac_rule_round_trips_and_refuses_a_changed_body(
        rule in hmac_rule(),
        body in body(),
        flip in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let rule = match rule {
            Ok(rule) => rule,
            Err(error) => {
                prop_assert_eq!(error, SecretError::Empty);
                return Ok(());
            }
        };
        let headers = [("x-sig", rule.sign(&body))];
        prop_assert_eq!(rule.verify(&headers, &body), Ok(()));
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1 << bit;
            let refused = rule.verify(&headers, &changed).unwrap_err();
            prop_assert_eq!(refused.code(), "no_signature_matched");
        }
    }

    #[test]
    fn hmac_rule_survives_hostile_headers(
        rule in hmac_rule(),
        headers in hostile_headers(),
        body in body(),
    ) {
        if let Ok(rule) = rule {
            let _ = rule.verify(&headers, &body);
        }
    }

    #[test]
    fn basic_credentials_round_trip(
        username in "[^:\\p{Cc}]{0,20}",
        passwords in proptest::collection::vec(".{1,30}", 1..4),
        which in any::<proptest::sample::Index>(),
        headers in hostile_headers(),
    ) {
        let credentials = credentials::Credentials::basic(&username, &passwords).unwrap();
        let _ = credentials.verify(&headers);
        let password = &passwords[which.index(passwords.len())];
        let encoded = STANDARD.encode(format!("{username}:{password}"));
        prop_assert_eq!(credentials.verify(&[("Authorization", format!("Basic {encoded}"))]), Ok(()));
        let wrong = format!("{password}x");
        prop_assume!(!passwords.contains(&wrong));
        let encoded = STANDARD.encode(format!("{username}:{wrong}"));
        let refused = credentials.verify(&[("Authorization", format!("Basic {encoded}"))]);
        prop_assert_eq!(refused.unwrap_err().code(), "invalid_credentials");
    }

    #[test]
    fn bearer_credentials_round_trip(
        tokens in proptest::collection::vec("\\S{1,40}", 1..4),
        which in any::<proptest::sample::Index>(),
        headers in hostile_headers(),
    ) {
        let credentials = credentials::Credentials::bearer(&tokens).unwrap();
        let _ = credentials.verify(&headers);
        let token = &tokens[which.index(tokens.len())];
        prop_assert_eq!(credentials.verify(&[("authorization", format!("Bearer {token}"))]), Ok(()));
        let wrong = format!("{token}x");
        prop_assume!(!tokens.contains(&wrong));
        let refused = credentials.verify(&[("authorization", format!("Bearer {wrong}"))]);
        prop_assert_eq!(refused.unwrap_err().code(), "invalid_credentials");
    }
}
