//! Shopify: `X-Shopify-Hmac-Sha256`, the base64 HMAC-SHA256 of the raw body keyed by the
//! secret's UTF-8 bytes. The webhook id comes in `X-Shopify-Webhook-Id`, unsigned.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::headers::required;
use crate::key::Key;
use crate::{Headers, Keyset, Message, Verified, VerifyError, tag};

const HMAC: &str = "x-shopify-hmac-sha256";
const WEBHOOK_ID: &str = "x-shopify-webhook-id";

pub(crate) fn sign(keys: &[Key], message: &Message<'_>) -> Vec<(&'static str, String)> {
    let signature = tag::compute(keys[0].hmac(), &[message.body]);
    vec![
        (WEBHOOK_ID, message.id.to_owned()),
        (HMAC, STANDARD.encode(signature)),
    ]
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let header = required(headers, HMAC)?;
    let candidate = tag::base64_fixed::<32>(header.trim()).ok_or(VerifyError::malformed(
        HMAC,
        "expected the base64 of a 32-byte HMAC-SHA256",
    ))?;
    let id = headers.header(WEBHOOK_ID);
    let key_index = tag::find_key(keyset.keys.iter().map(Key::hmac), &[candidate], &[body]);
    keyset.outcome(key_index, 1, id, None)
}
