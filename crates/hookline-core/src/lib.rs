//! Hookline's domain, free of any web framework or database driver.
//!
//! Here live the ids ([`id`]), the resources and their rules ([`model`] for sending,
//! [`ingest`] for receiving), pagination ([`page`]), the retry policy ([`retry`]), bounded
//! maps of values kept for the hot path ([`memo`]), the error type whose codes every
//! transport maps from ([`Error`]), and the [`Store`] trait that each storage backend
//! implements.
//! Handlers and workers see `dyn Store`, never a database.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod id;
pub mod ingest;
pub mod memo;
pub mod model;
pub mod page;
pub mod retry;
pub mod store;

pub use error::{Error, Result};

/// The current time at the precision every store keeps: milliseconds. Use it for every
/// timestamp that is stored, so what a caller is given equals what it later reads.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}
pub use store::Store;
