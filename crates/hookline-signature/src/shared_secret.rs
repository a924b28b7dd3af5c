//! Hugging Face: no signature, the plain secret itself in `X-Webhook-Secret`. Secrets are
//! kept as SHA-256 digests, so comparison is constant time whatever the received length.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::headers::required;
use crate::key::Key;
use crate::{Headers, Keyset, Message, Verified, VerifyError, tag};

const SECRET: &str = "x-webhook-secret";

pub(crate) fn sign(keys: &[Key], _message: &Message<'_>) -> Vec<(&'static str, String)> {
    let Key::Shared { plain, .. } = &keys[0] else {
        unreachable!("hugging face keys are shared secrets")
    };
    vec![(SECRET, plain.clone())]
}

pub(crate) fn verify<H: Headers + ?Sized>(
    keyset: &Keyset,
    headers: &H,
) -> Result<Verified, VerifyError> {
    let received: [u8; 32] = Sha256::digest(required(headers, SECRET)?.as_bytes()).into();
    let key_index = tag::first_match(&keyset.keys, |key| match key {
        Key::Shared { digest, .. } => bool::from(digest.ct_eq(&received)),
        _ => false,
    });
    keyset.outcome(key_index, 1, None, None)
}
