//! End-to-end tests of the `meterstack` binary with real peers (mosquitto_pub, HTTP).
//!
//! Each test starts `meterstack up` on free ports in a temporary directory and waits for its
//! readiness line on stdout; nothing sleeps to wait for readiness.

#![allow(clippy::print_stderr)] // Tests report their measurements on stderr.

mod alerts;
mod bench;
mod billing;
mod compose;
mod config;
mod container;
mod crash;
mod dsmr;
mod duckdb;
mod eval;
mod harness;
mod identity;
mod kafka;
mod lake;
mod live;
mod malformed;
mod ml;
mod path;
mod query;
mod shutdown;
mod simulate;
mod webhooks;
