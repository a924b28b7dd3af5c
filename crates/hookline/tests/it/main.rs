//! End-to-end tests of the `hookline` binary: real processes, real HTTP over loopback.

mod hostile;
mod ingest;
mod multinode;
mod operational;
mod receiver;
mod serve;
mod server;
mod signature_commands;
