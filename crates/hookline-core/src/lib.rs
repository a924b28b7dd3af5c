//! Hookline's domain, free of any web framework or database driver.
//!
//! Here live the ids ([`id`]), the resources and their rules ([`model`] for sending,
//! [`ingest`] for receiving), pagination ([`page`]), the retry policy ([`retry`]), bounded
//! maps of values kept for the hot path ([`memo`]), the error type whose codes every
//! transport maps from ([`Error`]), and the [`Store`] trait that each storage backend
//! implements.
//! Handlers and workers see `dyn Store`, never a database.

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod id;
pub mod ingest;
pub mod memo;
pub mod model;
pub mod page;
pub mod patch;
pub mod retry;
pub mod store;

pub use clock::{Clock, SharedClock};
pub use error::{Code, Error, Result};
pub use store::Store;
