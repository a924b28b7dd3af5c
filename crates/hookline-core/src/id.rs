//! Prefixed, time-sortable ids: `app_`, `ep_`, `msg_`, `atmpt_`, `qtask_`, `src_`, `log`, `job_`.
//!
//! The suffix is 27 base62 characters encoding 20 bytes: the creation time in milliseconds
//! (6 bytes, big-endian) then 14 random bytes. Sorting ids sorts by creation time, which
//! is what cursor pagination and the `before` / `after` filters rely on.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX_LEN: usize = 27;

/// Encodes 20 bytes as exactly 27 base62 characters (big-endian, zero-padded).
fn base62(bytes: [u8; 20]) -> String {
    // The number as five 32-bit limbs, most significant first: long division by 62 takes
    // five steps a digit instead of twenty.
    let mut limbs = [0u32; 5];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(4)) {
        *limb = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    let mut digits = [b'0'; SUFFIX_LEN];
    for digit in digits.iter_mut().rev() {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut() {
            let value = (remainder << 32) | u64::from(*limb);
            *limb = (value / 62) as u32;
            remainder = value % 62;
        }
        *digit = ALPHABET[remainder as usize];
    }
    String::from_utf8(digits.to_vec()).expect("base62 alphabet is ascii")
}

/// `len` random characters of the same base62 alphabet: for tokens and secrets that must
/// survive URLs and never contain `.`.
pub fn random_base62(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

fn suffix(at: DateTime<Utc>, random: bool) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 20];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    if random {
        rand::thread_rng().fill_bytes(&mut bytes[6..]);
    }
    base62(bytes)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of every id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// A new id created now.
            pub fn new() -> Self {
                Self::new_at(Utc::now())
            }

            /// A new id created at `at`.
            pub fn new_at(at: DateTime<Utc>) -> Self {
                Self(format!("{}{}", $prefix, suffix(at, true)))
            }

            /// The smallest id of time `at`: ids of items created before `at` sort below it.
            pub fn boundary(at: DateTime<Utc>) -> Self {
                Self(format!("{}{}", $prefix, suffix(at, false)))
            }

            /// Wraps an id read back from storage or a request, unchecked.
            pub fn from_string(id: String) -> Self {
                Self(id)
            }

            /// Whether `text` has this kind's prefix (so it is an id, not a uid).
            pub fn is_id(text: &str) -> bool {
                text.starts_with($prefix)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An application.
    AppId,
    "app_"
);
id_type!(
    /// An endpoint of an application.
    EndpointId,
    "ep_"
);
id_type!(
    /// A message sent to an application.
    MessageId,
    "msg_"
);
id_type!(
    /// One delivery attempt of a message to an endpoint.
    AttemptId,
    "atmpt_"
);
id_type!(
    /// A source of the receiving side: where one provider's webhooks arrive.
    SourceId,
    "src_"
);
id_type!(
    /// One request received by a source, accepted or not (the Svix Ingest log id).
    IngestRequestId,
    "log"
);
id_type!(
    /// A long-running AI job the tracker follows.
    JobId,
    "job_"
);
id_type!(
    /// A background task (recover).
    TaskId,
    "qtask_"
);

/// Whether `text` is a slug: letters, digits, `-`, `_` or `.`, at least one. Uids, event
/// type names and channels are slugs.
pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_creation_time_and_have_fixed_width() {
        let early = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        let late = Utc.timestamp_millis_opt(1_700_000_000_001).unwrap();
        let a = MessageId::new_at(early);
        let b = MessageId::new_at(late);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.as_str().len(), "msg_".len() + SUFFIX_LEN);
        assert!(MessageId::boundary(early) <= a);
        assert!(MessageId::boundary(late) > a);
        assert!(MessageId::is_id(a.as_str()));
        assert!(!AppId::is_id(a.as_str()));
    }

    #[test]
    fn random_base62_has_the_length_and_alphabet_asked_for() {
        let text = random_base62(43);
        assert_eq!(text.len(), 43);
        assert!(text.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(text, random_base62(43));
    }

    #[test]
    fn base62_of_zero_and_max() {
        assert_eq!(base62([0; 20]), "0".repeat(27));
        assert_eq!(base62([255; 20]), "aWgEPTl1tmebfsQzFP4bxwgy80V");
        // 0x0102…14, worked out with Python's big integers.
        let counting: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(base62(counting), "08umpsRGMi9hXbwR6pXWz2Ckob6");
    }
}
