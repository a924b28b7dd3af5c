//! Hookline's receiving side below HTTP.
//!
//! A provider posts to a source; the source's type says how to recognise a genuine
//! request and what it means. This crate holds everything that decides about received
//! requests, with no I/O:
//!
//! - [`providers`]: each source type's provider rules as one table of data (dedupe key,
//!   event type, challenge), matching `docs/providers.md`;
//! - [`source`]: a source's `{type, config}` parsed into a [`SourceType`], with the keys
//!   decoded and precise, located configuration errors (the server keeps the parsed type
//!   of each source version, so a request decodes nothing);
//! - [`pipeline`]: [`receive`], the one function that judges a request, and the
//!   [`Verdict`] that says what to answer, store and forward;
//! - [`pubsub`]: Cloud Pub/Sub push envelopes, which `google-pubsub` sources unwrap.
//!
//! Signatures and tokens are checked by `hookline-signature`, never here. Key sets that a
//! type checks tokens with (Google's JWKS) are fetched by the server and passed in, so
//! nothing here does I/O. The HTTP route
//! (`hookline-server`'s `ingest::receive`) reads the request, calls [`receive`], stores
//! [`Verdict::record`] and answers.

#[cfg(test)]
mod fixtures;
pub mod pipeline;
pub mod providers;
pub mod pubsub;
pub mod source;

pub use hookline_signature::oidc::Jwks;
pub use pipeline::{Accepted, DEFAULT_EVENT_TYPE, Incoming, Received, Refusal, Verdict, receive};
pub use pubsub::PushEnvelope;
pub use source::{ConfigError, IngestOptions, SourceType};
