//! End-to-end tests of the `hookline` binary: real processes, real HTTP over loopback.

mod emulator;
mod faults;
mod hostile;
mod http_layer;
mod ingest;
mod jobs;
mod main_key;
mod multinode;
mod operational;
mod pubsub;
mod receiver;
mod resources;
mod retention;
mod security;
mod serve;
mod server;
mod signature_commands;
mod throttle;
