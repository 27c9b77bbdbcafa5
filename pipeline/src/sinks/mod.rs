//! Where the `alerts` topic ends: the lifecycle in the SQL store ([`alerts::AlertRecorder`]) and
//! delivery of its events to webhook subscribers ([`webhooks::Dispatcher`]).

pub mod alerts;
pub mod webhooks;
