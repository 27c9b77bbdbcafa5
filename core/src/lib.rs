//! Shared types of meterstack.
//!
//! In: nothing — every other crate depends on this one.
//! Out: the canonical [`Reading`] and its Arrow schema ([`reading`]), the meter wire format and
//! its decoder ([`wire`]), the bus interface every stage talks through ([`bus`]), the metric names
//! ([`metrics`]) and the process health flags ([`health`]).

pub mod backoff;
pub mod bus;
pub mod component;
pub mod duration;
pub mod egress;
pub mod files;
pub mod health;
pub mod metrics;
pub mod mqtt;
pub mod reading;
pub mod records;
pub mod store;
pub mod tls;
pub mod wire;

pub use reading::{MeterId, Reading};
