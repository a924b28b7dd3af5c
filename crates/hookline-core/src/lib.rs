//! Hookline's domain, free of any web framework or database driver.
//!
//! Here live the ids ([`id`]), the resources and the rules both backends and every
//! handler share ([`model`] for sending, with secret rotation and event type revival;
//! [`ingest`] for receiving, with token rotation; [`patch`] for partial updates),
//! pagination ([`page`]), the retry policy ([`retry`]), secrets sealed at rest under the
//! main key ([`sealed`]), the clock everything that decides by time reads ([`clock`]),
//! bounded maps of values kept for the hot path ([`memo`]), the
//! one vocabulary of error codes every transport maps from ([`Code`], [`Error`]), and the
//! storage roles each backend implements ([`store`]: [`Store`] is all of them).
//! Handlers see `dyn Store` and the delivery engine `dyn DeliveryQueue`, never a database.
//!
//! [`DeliveryQueue`]: store::DeliveryQueue

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod id;
pub mod ingest;
pub mod job;
pub mod memo;
pub mod metrics;
pub mod model;
pub mod page;
pub mod patch;
pub mod retry;
pub mod sealed;
pub mod store;

pub use clock::{Clock, SharedClock};
pub use error::{Code, Error, Result};
pub use store::Store;
