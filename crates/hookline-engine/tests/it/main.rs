//! The engine end to end: a real SQLite store, real HTTP over loopback, signatures checked
//! on the receiving side with `hookline-signature`.

mod claims;
mod delivery;
mod failures;
mod guard;
mod hostile;
mod limits;
mod operational;
mod support;
