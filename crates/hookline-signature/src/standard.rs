//! The Standard Webhooks family: Standard Webhooks itself, Svix, OpenAI and Replicate.
//!
//! Signed content is `id.timestamp.body` over the exact raw bytes. The signature header is
//! a space-separated list of `version,base64` entries: `v1` for HMAC-SHA256, `v1a` for
//! Ed25519. A request verifies when any entry matches any key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};

use crate::headers::required;
use crate::key::Key;
use crate::{
    Headers, Keyset, Message, Scheme, SignError, Verified, VerifyError, VerifyOptions,
    parse_timestamp, tag,
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
    let content = signed_parts(message.id, &timestamp, message.body);
    let mut signatures = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let signature = match key {
            Key::Hmac(mac) => format!("v1,{}", STANDARD.encode(tag::compute(&**mac, &content))),
            Key::Ed25519Secret(secret) => {
                let signature = secret.sign(&content.concat()).to_bytes();
                format!("v1a,{}", STANDARD.encode(signature))
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
    let raw_timestamp = required(headers, names.timestamp)?;
    let header = required(headers, names.signature)?;
    let timestamp = parse_timestamp(names.timestamp, raw_timestamp)?;
    keyset.check_timestamp(timestamp, options)?;

    let entries: Vec<(&str, &str)> = header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .collect();
    if entries.is_empty() {
        return Err(VerifyError::malformed(
            names.signature,
            "expected space-separated `v1,<base64>` entries",
        ));
    }
    let signatures = entries
        .iter()
        .filter(|(version, _)| matches!(*version, "v1" | "v1a"))
        .count();
    let hmac_candidates: Vec<[u8; 32]> = candidates(&entries, "v1");
    let ed25519_candidates: Vec<[u8; 64]> = candidates(&entries, "v1a");

    // Signed content is built from the parsed timestamp, as the reference libraries do.
    let timestamp_text = timestamp.to_string();
    let content = signed_parts(id, &timestamp_text, body);
    let mut ed25519_content = None;
    let mut ed25519_matches = |public: &VerifyingKey| {
        if ed25519_candidates.is_empty() {
            return false;
        }
        // Joined once, and only if an Ed25519 key has candidates to check.
        let joined = ed25519_content.get_or_insert_with(|| content.concat());
        ed25519_candidates.iter().any(|candidate| {
            public
                .verify_strict(joined, &Signature::from_bytes(candidate))
                .is_ok()
        })
    };
    let key_index = tag::first_match(&keyset.keys, |key| match key {
        Key::Hmac(mac) => tag::any_equals(&hmac_candidates, &tag::compute(&**mac, &content)),
        Key::Ed25519Secret(secret) => ed25519_matches(&secret.verifying_key()),
        Key::Ed25519Public(public) => ed25519_matches(public),
        Key::Shared { .. } => unreachable!("no shared keys in the standard family"),
    });
    keyset.outcome(key_index, signatures, Some(id), Some(timestamp))
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
    Err(VerifyError::missing(primary.id))
}

/// What is signed: `id.timestamp.body`, in parts.
fn signed_parts<'a>(id: &'a str, timestamp: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
}

/// The signatures of entries `version`, decoded; those of the wrong size cannot match and
/// are left out.
fn candidates<const N: usize>(entries: &[(&str, &str)], version: &str) -> Vec<[u8; N]> {
    entries
        .iter()
        .filter(|(entry_version, _)| *entry_version == version)
        .filter_map(|(_, signature)| tag::base64_fixed::<N>(signature))
        .collect()
}
