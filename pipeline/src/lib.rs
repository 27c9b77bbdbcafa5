//! Stream transforms between the bus topics (the Kinesis Analytics + Lambda of the AWS design).
//!
//! This crate is the home of validation (VEE), interval and window aggregation, anomaly
//! detection and the alert lifecycle, each a stage under `src/transforms/<name>/` with its own
//! typed config. None is built yet: today a reading's only path is broker → `readings.raw` →
//! raw zone (`meterstack-lake`). The wire decoder every stage starts from lives in
//! `meterstack_core::wire`, so decoding is defined once.
