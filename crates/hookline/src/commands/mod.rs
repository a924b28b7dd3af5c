//! The subcommands, and the few helpers they share.

pub mod api;
pub mod job;
pub mod listen;
pub mod profile;
pub mod rekey;
pub mod resource;
pub mod send;
pub mod serve;
pub mod sign;
pub mod verify;

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng;

/// Exit code for a command that could not run as asked (bad flags, unreadable file).
pub const USAGE_ERROR: u8 = 2;

/// Reads the body from `file`, or from standard input when none is given.
pub fn read_body(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read body file {}", path.display()))
        }
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read body from standard input")?;
            Ok(body)
        }
    }
}

/// A fresh message id in the shape the scheme's senders use: a UUID for GitHub and
/// Shopify deliveries, a time-sortable `msg_` id (as `hookline serve` makes) for the rest.
pub fn new_message_id(scheme: hookline_signature::Scheme) -> String {
    use hookline_signature::Scheme;
    let mut rng = rand::thread_rng();
    match scheme {
        Scheme::Github | Scheme::Shopify => {
            let mut bytes: [u8; 16] = rng.r#gen();
            bytes[6] = (bytes[6] & 0x0f) | 0x40;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            let hex = hex_string(&bytes);
            format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            )
        }
        _ => hookline_core::id::MessageId::new().into_string(),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The system clock in Unix seconds.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses a `-H 'name: value'` argument.
pub fn parse_header(text: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("expected `name: value`, got {text:?}");
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("invalid header name in {text:?}");
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}
