//! Slack: `X-Slack-Signature: v0=<hex>`, the HMAC-SHA256 of `v0:<timestamp>:<body>` keyed
//! by the signing secret's UTF-8 bytes, with the timestamp in `X-Slack-Request-Timestamp`.

use crate::headers::required;
use crate::key::Key;
use crate::{Headers, Keyset, Message, Verified, VerifyError, VerifyOptions, parse_timestamp, tag};

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";

pub(crate) fn sign(keys: &[Key], message: &Message<'_>) -> Vec<(&'static str, String)> {
    let timestamp = message.timestamp.to_string();
    let signature = tag::compute(
        keys[0].hmac(),
        &[b"v0:", timestamp.as_bytes(), b":", message.body],
    );
    vec![
        (TIMESTAMP, timestamp),
        (SIGNATURE, format!("v0={}", hex::encode(signature))),
    ]
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let raw_timestamp = required(headers, TIMESTAMP)?;
    let header = required(headers, SIGNATURE)?;
    let timestamp = parse_timestamp(TIMESTAMP, raw_timestamp)?;
    keyset.check_timestamp(timestamp, options)?;
    let candidate = header
        .strip_prefix("v0=")
        .and_then(|hex| tag::hex_fixed::<32>(hex.trim()))
        .ok_or(VerifyError::malformed(
            SIGNATURE,
            "expected `v0=` and 64 hex digits",
        ))?;
    // Signed as received: the header's own text, not the parsed number.
    let content: [&[u8]; 4] = [b"v0:", raw_timestamp.as_bytes(), b":", body];
    let key_index = tag::find_key(keyset.keys.iter().map(Key::hmac), &[candidate], &content);
    keyset.outcome(key_index, 1, None, Some(timestamp))
}
