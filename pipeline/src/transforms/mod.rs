//! The pipeline's stages, one folder each, with its pure logic and its tests. The processor
//! ([`crate::processor`]) runs them in this order for every reading and owns their state
//! ([`crate::state`]).
//!
//! | stage | what it does |
//! |---|---|
//! | [`vee`] | grid placement and clock skew, range checks, duplicates, late and resent readings, the quality flag |
//! | [`intervals`] | cumulative registers → interval energy (rollover, reset, exchange, gaps, outages), energy conserved; resend requests for gaps |
//! | [`windows`] | event-time windows with watermarks, allowed lateness and revisions |
//! | [`anomaly`] | alert lifecycle, per-meter baselines, the meter's rules on each reading, silence and feeder-outage inference |
//! | [`completeness`] | each feeder's received intervals per day |

pub mod anomaly;
pub mod completeness;
pub mod intervals;
pub mod vee;
pub mod windows;
