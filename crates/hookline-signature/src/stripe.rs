//! Stripe: `Stripe-Signature: t=<timestamp>,v1=<hex>[,v1=<hex>…]`, the HMAC-SHA256 of
//! `<timestamp>.<body>` keyed by the secret's UTF-8 bytes (`whsec_` and all). During a
//! rotation Stripe sends one `v1=` per secret. Only stale timestamps are refused.

use crate::headers::required;
use crate::key::Key;
use crate::{Headers, Keyset, Message, Verified, VerifyError, VerifyOptions, parse_timestamp, tag};

const SIGNATURE: &str = "stripe-signature";

pub(crate) fn sign(keys: &[Key], message: &Message<'_>) -> Vec<(&'static str, String)> {
    let timestamp = message.timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            let content: [&[u8]; 3] = [timestamp.as_bytes(), b".", message.body];
            format!("v1={}", hex::encode(tag::compute(key.hmac(), &content)))
        })
        .collect();
    vec![(SIGNATURE, format!("t={timestamp},{}", signatures.join(",")))]
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let header = required(headers, SIGNATURE)?;
    let (raw_timestamp, candidates) = parse(header)?;
    let timestamp = parse_timestamp(SIGNATURE, raw_timestamp)?;
    keyset.check_timestamp(timestamp, options)?;
    // Stripe's event id lives in the JSON body; finding it is the caller's business.
    let content: [&[u8]; 3] = [raw_timestamp.as_bytes(), b".", body];
    let key_index = tag::find_key(keyset.keys.iter().map(Key::hmac), &candidates, &content);
    keyset.outcome(key_index, candidates.len(), None, Some(timestamp))
}

/// Splits `t=…,v1=…[,v1=…]`. Entries of other schemes (`v0=`, test-mode extras) are ignored.
fn parse(header: &str) -> Result<(&str, Vec<[u8; 32]>), VerifyError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    let mut signatures = 0;
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => {
                signatures += 1;
                candidates.extend(tag::hex_fixed::<32>(value.trim()));
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::malformed(SIGNATURE, "no `t=` timestamp"))?;
    if signatures == 0 {
        return Err(VerifyError::malformed(SIGNATURE, "no `v1=` signature"));
    }
    if candidates.is_empty() {
        return Err(VerifyError::malformed(
            SIGNATURE,
            "`v1=` signatures must be 64 hex digits",
        ));
    }
    Ok((timestamp, candidates))
}
