//! Providers with schemes of their own: GitHub, Stripe, Slack, Shopify and Hugging Face.
//!
//! All but Hugging Face sign with HMAC-SHA256 keyed by the secret's UTF-8 bytes; they
//! differ in what is signed and how the tag is written. Hugging Face sends the plain secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::key::{HmacSha256, Key};
use crate::{
    Headers, Keyset, Message, Scheme, Verified, VerifyError, VerifyOptions, parse_timestamp,
};

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
const SHOPIFY_HMAC: &str = "x-shopify-hmac-sha256";
const SHOPIFY_WEBHOOK_ID: &str = "x-shopify-webhook-id";
const HUGGINGFACE_SECRET: &str = "x-webhook-secret";

pub(crate) fn sign(
    scheme: Scheme,
    keys: &[Key],
    message: &Message<'_>,
) -> Vec<(&'static str, String)> {
    let body = message.body;
    let timestamp = message.timestamp.to_string();
    match scheme {
        Scheme::Github => vec![
            (GITHUB_DELIVERY, message.id.to_owned()),
            (
                GITHUB_SIGNATURE,
                format!("sha256={}", hex::encode(tag(&keys[0], &[body]))),
            ),
        ],
        Scheme::Stripe => {
            let signatures: Vec<String> = keys
                .iter()
                .map(|key| {
                    format!(
                        "v1={}",
                        hex::encode(tag(key, &[timestamp.as_bytes(), b".", body]))
                    )
                })
                .collect();
            vec![(
                STRIPE_SIGNATURE,
                format!("t={timestamp},{}", signatures.join(",")),
            )]
        }
        Scheme::Slack => {
            let signature = tag(&keys[0], &[b"v0:", timestamp.as_bytes(), b":", body]);
            vec![
                (SLACK_TIMESTAMP, timestamp),
                (SLACK_SIGNATURE, format!("v0={}", hex::encode(signature))),
            ]
        }
        Scheme::Shopify => vec![
            (SHOPIFY_WEBHOOK_ID, message.id.to_owned()),
            (SHOPIFY_HMAC, STANDARD.encode(tag(&keys[0], &[body]))),
        ],
        Scheme::HuggingFace => {
            let Key::Shared { plain, .. } = &keys[0] else {
                unreachable!("hugging face keys are shared secrets")
            };
            vec![(HUGGINGFACE_SECRET, plain.clone())]
        }
        _ => unreachable!("standard schemes are signed in standard.rs"),
    }
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    match keyset.scheme {
        Scheme::Github => {
            let header = required(headers, GITHUB_SIGNATURE)?;
            let candidate = header.strip_prefix("sha256=").and_then(decode_hex).ok_or(
                VerifyError::MalformedHeader {
                    name: GITHUB_SIGNATURE,
                    reason: "expected `sha256=` and 64 hex digits",
                },
            )?;
            let id = headers.header(GITHUB_DELIVERY).map(str::to_owned);
            find_key(keyset, &[candidate], &[body], id, None)
        }
        Scheme::Stripe => {
            let header = required(headers, STRIPE_SIGNATURE)?;
            let (raw_timestamp, candidates) = parse_stripe(header)?;
            let timestamp = parse_timestamp(STRIPE_SIGNATURE, raw_timestamp)?;
            keyset.check_timestamp(timestamp, options)?;
            // Stripe's event id lives in the JSON body; finding it is the caller's business.
            let content: [&[u8]; 3] = [raw_timestamp.as_bytes(), b".", body];
            find_key(keyset, &candidates, &content, None, Some(timestamp))
        }
        Scheme::Slack => {
            let raw_timestamp = required(headers, SLACK_TIMESTAMP)?;
            let header = required(headers, SLACK_SIGNATURE)?;
            let timestamp = parse_timestamp(SLACK_TIMESTAMP, raw_timestamp)?;
            keyset.check_timestamp(timestamp, options)?;
            let candidate = header.strip_prefix("v0=").and_then(decode_hex).ok_or(
                VerifyError::MalformedHeader {
                    name: SLACK_SIGNATURE,
                    reason: "expected `v0=` and 64 hex digits",
                },
            )?;
            let content: [&[u8]; 4] = [b"v0:", raw_timestamp.as_bytes(), b":", body];
            find_key(keyset, &[candidate], &content, None, Some(timestamp))
        }
        Scheme::Shopify => {
            let header = required(headers, SHOPIFY_HMAC)?;
            let candidate = decode_base64_tag(header).ok_or(VerifyError::MalformedHeader {
                name: SHOPIFY_HMAC,
                reason: "expected the base64 of a 32-byte HMAC-SHA256",
            })?;
            let id = headers.header(SHOPIFY_WEBHOOK_ID).map(str::to_owned);
            find_key(keyset, &[candidate], &[body], id, None)
        }
        Scheme::HuggingFace => {
            let received: [u8; 32] =
                Sha256::digest(required(headers, HUGGINGFACE_SECRET)?.as_bytes()).into();
            let index = keyset.keys.iter().position(|key| match key {
                Key::Shared { digest, .. } => bool::from(digest.ct_eq(&received)),
                _ => false,
            });
            match index {
                Some(key_index) => Ok(Verified {
                    id: None,
                    timestamp: None,
                    key_index,
                }),
                None => Err(VerifyError::NoMatch {
                    signatures: 1,
                    keys: keyset.keys.len(),
                }),
            }
        }
        _ => unreachable!("standard schemes are verified in standard.rs"),
    }
}

fn required<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<&'h str, VerifyError> {
    headers.header(name).ok_or(VerifyError::MissingHeader(name))
}

/// The HMAC-SHA256 of the concatenated `parts` under `key`.
fn tag(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let Key::Hmac(mac) = key else {
        unreachable!("provider schemes other than hugging face use hmac keys")
    };
    let mut mac: HmacSha256 = (**mac).clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Checks each key against every candidate tag, in constant time per comparison.
fn find_key(
    keyset: &Keyset,
    candidates: &[[u8; 32]],
    content: &[&[u8]],
    id: Option<String>,
    timestamp: Option<i64>,
) -> Result<Verified, VerifyError> {
    for (key_index, key) in keyset.keys.iter().enumerate() {
        let expected = tag(key, content);
        let matched = candidates.iter().fold(false, |found, candidate| {
            found | bool::from(candidate.ct_eq(&expected))
        });
        if matched {
            return Ok(Verified {
                id,
                timestamp,
                key_index,
            });
        }
    }
    Err(VerifyError::NoMatch {
        signatures: candidates.len(),
        keys: keyset.keys.len(),
    })
}

/// Splits `t=…,v1=…[,v1=…]`. Entries of other schemes (`v0=`, test-mode extras) are ignored.
fn parse_stripe(header: &str) -> Result<(&str, Vec<[u8; 32]>), VerifyError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    let mut signatures = 0;
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => {
                signatures += 1;
                candidates.extend(decode_hex(value));
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedHeader {
        name: STRIPE_SIGNATURE,
        reason: "no `t=` timestamp",
    })?;
    if signatures == 0 {
        return Err(VerifyError::MalformedHeader {
            name: STRIPE_SIGNATURE,
            reason: "no `v1=` signature",
        });
    }
    if candidates.is_empty() {
        return Err(VerifyError::MalformedHeader {
            name: STRIPE_SIGNATURE,
            reason: "`v1=` signatures must be 64 hex digits",
        });
    }
    Ok((timestamp, candidates))
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

fn decode_base64_tag(text: &str) -> Option<[u8; 32]> {
    let mut buffer = [0u8; 40];
    let len = STANDARD.decode_slice(text.trim(), &mut buffer).ok()?;
    (len == 32).then(|| buffer[..32].try_into().expect("length checked"))
}
