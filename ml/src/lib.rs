//! Forecasting (the SageMaker + Fargate + DynamoDB of the AWS design): models trained on the
//! trusted zone's hourly consumption, forecasts of every meter's next hours with a band.
//!
//! - [`series`]: the training frame, each meter's hourly energy on one clock.
//! - [`calendar`]: the utility's time zone and holidays.
//! - [`features`]: what a model may know at a forecast's origin (nothing at or after it).
//! - [`model`]: the interface, the baselines and the learned global model.
//! - [`backtest`]: day-ahead forecasts from every midnight of a window, scored.

pub mod backtest;
pub mod calendar;
pub mod features;
pub mod model;
pub mod series;

pub use calendar::{Calendar, CalendarConfig};
pub use model::{Forecaster, ModelKind, Quantiles};
pub use series::{Hour, Series};
