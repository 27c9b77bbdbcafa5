//! Forecasting (the SageMaker + Fargate + DynamoDB of the AWS design): models trained on the
//! trusted zone's hourly consumption, forecasts of every meter's next hours with a band.
//!
//! - [`series`]: the training frame, each meter's hourly energy on one clock.
//! - [`calendar`]: the utility's time zone and holidays.
//! - [`features`]: what a model may know at a forecast's origin (nothing at or after it).
//! - [`model`]: the interface, the baselines and the learned global model.
//! - [`profiles`]: load-profile clusters (k-means over the shapes of the meters' days).
//! - [`backtest`]: day-ahead forecasts from every midnight of a window, scored.
//! - [`source`]: the frame from the trusted zone's `readings_hourly`.
//! - [`registry`]: model versions in the lake's object store, one of them current.
//! - [`train`]: frame → model → registry → backtest → promotion (`meterstack ml train`, the
//!   `ml` role).
//! - [`inference`]: every meter's next hours from the current model, with feeder and fleet
//!   totals, into the SQL store.
//! - [`deviation`]: hours outside the forecast band → `consumption_forecast_deviation` alerts.
//! - [`service`]: the `ml` role (retrain on schedule, forecast and check deviations after each
//!   ETL run).
//! - [`weather`]: the temperature series per area a model may use, imported from CSV.
//! - [`config`]: the `ml` section of meterstack.toml.

pub mod backtest;
pub mod calendar;
pub mod config;
pub mod deviation;
pub mod features;
pub mod inference;
pub mod model;
pub mod profiles;
pub mod registry;
pub mod series;
pub mod service;
pub mod source;
pub mod train;
pub mod weather;

pub use calendar::{Calendar, CalendarConfig};
pub use config::{MlConfig, Promote};
pub use model::{Forecaster, ModelKind, Quantiles};
pub use series::{Hour, Series};

/// Why forecasting failed.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// Not enough data.
    #[error("{0}")]
    NoData(String),
    /// Reading the trusted zone failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A model could not be fitted or read.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The model registry failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// No registered model had finished training by then.
    #[error("no model was trained on data ending by {0}")]
    NoModel(chrono::DateTime<chrono::Utc>),
    /// A request outside what a model can answer.
    #[error("{0}")]
    Invalid(String),
    /// A learning thread stopped.
    #[error("training stopped: {0}")]
    Stopped(String),
    /// The SQL store failed.
    #[error(transparent)]
    Store(#[from] meterstack_core::store::StoreError),
    /// Publishing alerts failed.
    #[error("publishing alerts: {0}")]
    Bus(#[from] meterstack_core::bus::Error),
}
