//! The Standard Webhooks family: Standard Webhooks itself, Svix, OpenAI and Replicate.
//!
//! Signed content is `id.timestamp.body` over the exact raw bytes. The signature header is
//! a space-separated list of `version,base64` entries: `v1` for HMAC-SHA256, `v1a` for
//! Ed25519. A request verifies when any entry matches any key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _};
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::key::{HmacSha256, Key};
use crate::{
    Headers, Keyset, Message, Scheme, SignError, Verified, VerifyError, VerifyOptions,
    parse_timestamp,
};

/// The header names of one member of the family.
struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: Names = Names {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

const SVIX: Names = Names {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

fn names(scheme: Scheme) -> &'static Names {
    match scheme {
        Scheme::Svix => &SVIX,
        _ => &WEBHOOK,
    }
}

pub(crate) fn sign(
    scheme: Scheme,
    keys: &[Key],
    message: &Message<'_>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let timestamp = message.timestamp.to_string();
    let mut signatures = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let signature = match key {
            Key::Hmac(mac) => {
                let tag = hmac_tag(mac, message.id, &timestamp, message.body);
                format!("v1,{}", STANDARD.encode(tag))
            }
            Key::Ed25519Secret(secret) => {
                let content = signed_content(message.id, &timestamp, message.body);
                format!("v1a,{}", STANDARD.encode(secret.sign(&content).to_bytes()))
            }
            Key::Ed25519Public(_) => return Err(SignError::PublicKeyOnly { index }),
            Key::Shared { .. } => unreachable!("no shared keys in the standard family"),
        };
        signatures.push(signature);
    }
    let names = names(scheme);
    Ok(vec![
        (names.id, message.id.to_owned()),
        (names.timestamp, timestamp),
        (names.signature, signatures.join(" ")),
    ])
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let (names, id) = find_names(keyset.scheme, headers)?;
    let raw_timestamp = headers
        .header(names.timestamp)
        .ok_or(VerifyError::MissingHeader(names.timestamp))?;
    let header = headers
        .header(names.signature)
        .ok_or(VerifyError::MissingHeader(names.signature))?;
    let timestamp = parse_timestamp(names.timestamp, raw_timestamp)?;
    keyset.check_timestamp(timestamp, options)?;

    let entries: Vec<(&str, &str)> = header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .collect();
    if entries.is_empty() {
        return Err(VerifyError::MalformedHeader {
            name: names.signature,
            reason: "expected space-separated `v1,<base64>` entries",
        });
    }

    // Signed content is built from the parsed timestamp, as the reference libraries do.
    let timestamp_text = timestamp.to_string();
    let signatures = entries
        .iter()
        .filter(|(version, _)| matches!(*version, "v1" | "v1a"))
        .count();
    for (index, key) in keyset.keys.iter().enumerate() {
        let matched = match key {
            Key::Hmac(mac) => {
                let tag = hmac_tag(mac, id, &timestamp_text, body);
                entries
                    .iter()
                    .filter(|(version, _)| *version == "v1")
                    .filter_map(|(_, signature)| decode_fixed::<32>(signature))
                    .fold(false, |found, candidate| {
                        found | bool::from(candidate.ct_eq(&tag))
                    })
            }
            Key::Ed25519Secret(secret) => {
                ed25519_matches(&secret.verifying_key(), &entries, id, &timestamp_text, body)
            }
            Key::Ed25519Public(public) => {
                ed25519_matches(public, &entries, id, &timestamp_text, body)
            }
            Key::Shared { .. } => unreachable!("no shared keys in the standard family"),
        };
        if matched {
            return Ok(Verified {
                id: Some(id.to_owned()),
                timestamp: Some(timestamp),
                key_index: index,
            });
        }
    }
    Err(VerifyError::NoMatch {
        signatures,
        keys: keyset.keys.len(),
    })
}

/// Finds the id header, and with it the naming in use. Svix's libraries read `svix-*`
/// headers and fall back to `webhook-*`; the others read `webhook-*` only.
fn find_names<H: Headers + ?Sized>(
    scheme: Scheme,
    headers: &H,
) -> Result<(&'static Names, &str), VerifyError> {
    let primary = names(scheme);
    if let Some(id) = headers.header(primary.id) {
        return Ok((primary, id));
    }
    if scheme == Scheme::Svix
        && let Some(id) = headers.header(WEBHOOK.id)
    {
        return Ok((&WEBHOOK, id));
    }
    Err(VerifyError::MissingHeader(primary.id))
}

fn hmac_tag(mac: &HmacSha256, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

fn ed25519_matches(
    public: &ed25519_dalek::VerifyingKey,
    entries: &[(&str, &str)],
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> bool {
    let candidates: Vec<[u8; 64]> = entries
        .iter()
        .filter(|(version, _)| *version == "v1a")
        .filter_map(|(_, signature)| decode_fixed::<64>(signature))
        .collect();
    if candidates.is_empty() {
        return false;
    }
    let content = signed_content(id, timestamp, body);
    candidates.iter().any(|candidate| {
        public
            .verify_strict(&content, &Signature::from_bytes(candidate))
            .is_ok()
    })
}

/// Decodes base64 that must hold exactly `N` bytes; anything else cannot match.
fn decode_fixed<const N: usize>(encoded: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // Room for one spare byte, so longer input fails instead of being cut short.
    let mut buffer = [0u8; 72];
    let len = STANDARD.decode_slice(encoded, &mut buffer).ok()?;
    (len == N).then(|| {
        out.copy_from_slice(&buffer[..N]);
        out
    })
}
