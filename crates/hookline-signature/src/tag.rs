//! HMAC tags, shared by every scheme: computing one, decoding a received one from hex or
//! base64, and finding the key that made it without telling by the time taken.

use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{Engine, alphabet};
use hmac::Mac;
use hmac::digest::Output;
use subtle::ConstantTimeEq;

/// The longest tag or signature decoded: an HMAC-SHA512 or an Ed25519 signature.
pub(crate) const MAX_TAG_LEN: usize = 64;

/// Standard base64 with or without padding, for senders that differ on it (a configured
/// HMAC, `Authorization: Basic`): the decoded length is what gets checked.
pub(crate) const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC of the concatenated `parts` under `mac` (a key with its pads absorbed).
pub(crate) fn compute<M: Mac + Clone>(mac: &M, parts: &[&[u8]]) -> Output<M> {
    let mut mac = mac.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes()
}

/// The index of the first item for which `matches` holds. Every item is tried whatever
/// the outcome, so the time taken does not tell which one matched.
pub(crate) fn first_match<T>(
    items: impl IntoIterator<Item = T>,
    mut matches: impl FnMut(T) -> bool,
) -> Option<usize> {
    items
        .into_iter()
        .enumerate()
        .fold(None, |found, (index, item)| {
            let matched = matches(item);
            found.or(matched.then_some(index))
        })
}

/// Whether any candidate equals `expected`. Each is compared in constant time, and all
/// are compared.
pub(crate) fn any_equals<C: AsRef<[u8]>>(candidates: &[C], expected: &[u8]) -> bool {
    candidates.iter().fold(false, |found, candidate| {
        found | bool::from(candidate.as_ref().ct_eq(expected))
    })
}

/// The index of the first key whose HMAC of `content` is one of `candidates`.
pub(crate) fn find_key<'k, M, C>(
    keys: impl IntoIterator<Item = &'k M>,
    candidates: &[C],
    content: &[&[u8]],
) -> Option<usize>
where
    M: Mac + Clone + 'k,
    C: AsRef<[u8]>,
{
    first_match(keys, |mac| any_equals(candidates, &compute(mac, content)))
}

/// Decodes hex (either case) that holds exactly `N` bytes.
pub(crate) fn hex_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    decode_hex(text, &mut out).then_some(out)
}

/// Decodes strict, padded, standard base64 that holds exactly `N` bytes.
pub(crate) fn base64_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    decode_base64(&STANDARD, text, &mut out).then_some(out)
}

/// Fills `out` from hex holding exactly `out.len()` bytes; false for anything else.
pub(crate) fn decode_hex(text: &str, out: &mut [u8]) -> bool {
    hex::decode_to_slice(text, out).is_ok()
}

/// Fills `out` from base64 (as `engine` reads it) holding exactly `out.len()` bytes; false
/// for anything else, longer input included. `out` holds at most [`MAX_TAG_LEN`] bytes.
pub(crate) fn decode_base64(engine: &impl Engine, text: &str, out: &mut [u8]) -> bool {
    // Room for spare bytes, so longer input fails instead of being cut short.
    let mut buffer = [0u8; MAX_TAG_LEN + 8];
    match engine.decode_slice(text, &mut buffer) {
        Ok(len) if len == out.len() => {
            out.copy_from_slice(&buffer[..len]);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_tries_everything_and_keeps_the_first() {
        let mut tried = 0;
        let found = first_match([1, 2, 3, 2], |item| {
            tried += 1;
            item == 2
        });
        assert_eq!(found, Some(1));
        assert_eq!(tried, 4);
        assert_eq!(first_match([1, 3], |item| item == 2), None);
    }

    #[test]
    fn decoding_needs_the_exact_length() {
        assert_eq!(hex_fixed::<2>("aBcd"), Some([0xab, 0xcd]));
        assert_eq!(hex_fixed::<2>("abc"), None);
        assert_eq!(hex_fixed::<2>("abcdef"), None);
        assert_eq!(hex_fixed::<2>(" abcd"), None);
        assert_eq!(base64_fixed::<3>("AAEC"), Some([0, 1, 2]));
        assert_eq!(base64_fixed::<3>("AAECAw=="), None);
        assert_eq!(base64_fixed::<2>("AAE"), None, "padding is required");
        assert_eq!(base64_fixed::<32>(&"A".repeat(1000)), None);
    }
}
