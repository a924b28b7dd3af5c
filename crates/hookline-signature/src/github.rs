//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body keyed by
//! the secret's UTF-8 bytes. The delivery id comes in `X-GitHub-Delivery`, unsigned.

use crate::headers::required;
use crate::key::Key;
use crate::{Headers, Keyset, Message, Verified, VerifyError, tag};

const SIGNATURE: &str = "x-hub-signature-256";
const DELIVERY: &str = "x-github-delivery";

pub(crate) fn sign(keys: &[Key], message: &Message<'_>) -> Vec<(&'static str, String)> {
    let signature = tag::compute(keys[0].hmac(), &[message.body]);
    vec![
        (DELIVERY, message.id.to_owned()),
        (SIGNATURE, format!("sha256={}", hex::encode(signature))),
    ]
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let header = required(headers, SIGNATURE)?;
    let candidate = header
        .strip_prefix("sha256=")
        .and_then(|hex| tag::hex_fixed::<32>(hex.trim()))
        .ok_or(VerifyError::malformed(
            SIGNATURE,
            "expected `sha256=` and 64 hex digits",
        ))?;
    let id = headers.header(DELIVERY);
    let key_index = tag::find_key(keyset.keys.iter().map(Key::hmac), &[candidate], &[body]);
    keyset.outcome(key_index, 1, id, None)
}
