//! Forecasting (the SageMaker + Fargate + DynamoDB of the AWS design): linfa models trained on
//! the trusted zone, scheduled inference, predictions in the SQL store through sqlx.
//!
//! Nothing is built yet. The crate exists so the workspace has its final shape and so that
//! linfa, ndarray and sqlx are resolved, at versions that agree with the rest, in the one
//! lockfile every later change builds on.
