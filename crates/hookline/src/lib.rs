//! Hookline, the program: its typed configuration ([`config`]) and [`run`], the one entry
//! point that runs a node (store, delivery engine, API). `hookline serve` calls it, and so
//! do the end-to-end tests, on a listener of port 0, with [`run_with`] when they bring
//! their own clock.

pub mod config;
mod server;

pub use server::{Options, Rekeyed, migrate, rekey, run, run_with};
