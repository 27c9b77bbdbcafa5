//! The `ml` role: retrains on its schedule and forecasts after every ETL run.
//!
//! Every `ml.interval` it looks at the trusted zone's ETL bookmark. When the current model's
//! training data ends more than `ml.retrain_after` before today's local midnight (or there is
//! no model), it trains one on the data before that midnight and promotes it per `ml.promote`.
//! When the bookmark changed since its last forecast (the ETL restated something), or a model
//! became current, it forecasts every meter's next `ml.forecast_hours` into the SQL store, and
//! checks today's hours so far against their forecast from midnight: stretches outside the
//! band open and resolve `consumption_forecast_deviation` alerts on the `alerts` topic
//! ([`crate::deviation`]). Failures are logged and counted; the next pass tries again. Run it
//! in one process.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use meterstack_core::bus::{Bus, Record};
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::metrics as m;
use meterstack_core::records::AlertType;
use meterstack_core::store::SqlStore;
use meterstack_core::store::alerts::{AlertFilter, AlertState};
use meterstack_lake::query::{Lake, QueryConfig};
use meterstack_pipeline::Registry;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::calendar::Calendar;
use crate::config::MlConfig;
use crate::deviation::{self, Active};
use crate::registry::ModelRegistry;
use crate::series::{hour_of, start_of};
use crate::{MlError, inference, train};

/// What the ETL writes when it finishes a run (its bookmark).
const ETL_BOOKMARK: &str = "state/etl/bookmark.json";

/// The `ml` role's component.
pub struct Forecasting {
    config: MlConfig,
    lake: Lake,
    objects: Arc<dyn ObjectStore>,
    models: ModelRegistry,
    store: SqlStore,
    calendar: Calendar,
    /// The bus and the `alerts` topic deviation alerts go to (`None`: no alerts).
    alerts: Option<(Arc<dyn Bus>, String)>,
    /// The bookmark's version at the last forecast, and the model it used.
    last: Option<(String, String)>,
}

impl std::fmt::Debug for Forecasting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecasting")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MlConfig {
    /// The `ml` role over the context's lake and SQL store, reading the trusted zone within
    /// `query`'s bounds.
    pub fn component(&self, query: &QueryConfig, ctx: &Context) -> Result<Forecasting, MlError> {
        let calendar = Calendar::new(&self.calendar).map_err(MlError::Invalid)?;
        let lake = Lake::new(ctx.objects.clone(), query.clone())
            .map_err(|e| MlError::Invalid(e.to_string()))?;
        let alerts = match (&ctx.bus, self.deviation.enabled) {
            (Some(bus), true) => Some((bus.clone(), ctx.topics.alerts.clone())),
            (None, true) => {
                warn!("the ml role has no bus here: forecast-deviation alerts are off");
                None
            }
            (_, false) => None,
        };
        Ok(Forecasting {
            alerts,
            config: self.clone(),
            lake,
            objects: ctx.objects.clone(),
            models: ModelRegistry::new(ctx.objects.clone()),
            store: ctx.store.clone(),
            calendar,
            last: None,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    /// A model was trained (and whether it was promoted).
    pub trained: Option<bool>,
    /// Forecast rows written.
    pub forecast_rows: Option<u64>,
}

impl Forecasting {
    /// Each meter's active (open or acknowledged) deviation alert.
    async fn active_deviations(&self) -> Result<HashMap<String, Active>, MlError> {
        const PAGE: u32 = 1000;
        let mut out = HashMap::new();
        for state in [AlertState::Open, AlertState::Acknowledged] {
            let mut after = None;
            loop {
                let filter = AlertFilter {
                    state: Some(state),
                    alert_type: Some(AlertType::ConsumptionForecastDeviation.name().into()),
                    limit: Some(PAGE),
                    after: after.take(),
                    ..AlertFilter::default()
                };
                let page = self.store.list_alerts(&filter).await?;
                for a in &page {
                    if let Some(meter) = &a.meter_id {
                        out.insert(
                            meter.clone(),
                            Active::new(&a.alert_id, a.start, &a.evidence),
                        );
                    }
                }
                if page.len() < PAGE as usize {
                    break;
                }
                after = page.last().map(|a| a.alert_id.clone());
            }
        }
        Ok(out)
    }

    async fn bookmark_version(&self) -> Option<String> {
        let head = self.objects.head(&Path::from(ETL_BOOKMARK)).await.ok()?;
        Some(
            head.e_tag
                .unwrap_or_else(|| head.last_modified.to_rfc3339()),
        )
    }

    /// One pass at `now`: retrain if due, forecast if the trusted zone or the model changed.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<Pass, MlError> {
        let mut pass = Pass::default();
        let Some(bookmark) = self.bookmark_version().await else {
            // No ETL run yet: nothing in the trusted zone.
            return Ok(pass);
        };
        let registry = Registry::load(&self.store).await?;
        let midnight = start_of(self.calendar.midnight(hour_of(now)));
        let current = match self.models.current().await? {
            Some(v) => Some(self.models.meta(&v).await?),
            None => None,
        };
        let due = current.as_ref().is_none_or(|m| {
            midnight - m.data_until
                >= chrono::Duration::from_std(self.config.retrain_after).unwrap_or_default()
        });
        if due {
            let trained = async {
                let frame = train::frame(
                    &self.lake,
                    &self.store,
                    &registry,
                    midnight,
                    self.config.train_days,
                    None,
                    |_| {},
                );
                let series = Arc::new(frame.await?);
                let c = &self.config;
                train::train(series, midnight, &self.calendar, c, c.promote, &self.models).await
            };
            match trained.await {
                Ok(t) => {
                    let outcome = if t.promoted { "promoted" } else { "kept" };
                    metrics::counter!(m::ML_TRAININGS, "outcome" => outcome).increment(1);
                    info!(version = %t.meta.version, mae = ?t.mae, current_mae = ?t.current_mae, promoted = t.promoted, "trained a model");
                    pass.trained = Some(t.promoted);
                }
                Err(
                    MlError::NoData(why) | MlError::Model(crate::model::ModelError::NoData(why)),
                ) => {
                    metrics::counter!(m::ML_TRAININGS, "outcome" => "no_data").increment(1);
                    info!(%why, "not enough history to train yet");
                }
                Err(e) => {
                    metrics::counter!(m::ML_TRAININGS, "outcome" => "error").increment(1);
                    return Err(e);
                }
            }
        }
        let Some(version) = self.models.current().await? else {
            metrics::counter!(m::ML_FORECAST_RUNS, "outcome" => "no_model").increment(1);
            return Ok(pass);
        };
        let key = (bookmark, version.clone());
        if self.last.as_ref() == Some(&key) {
            return Ok(pass);
        }
        let (_, model) = self.models.load(&version).await?;
        let (origin, _) = inference::origin(&self.calendar, now);
        // The features look back at most 28 days before the origin; the hours since it are
        // what the deviation check compares with their forecast.
        let until = start_of(hour_of(now) + 1);
        let series =
            train::frame(&self.lake, &self.store, &registry, until, 36, None, |_| {}).await?;
        let active = match self.alerts {
            Some(_) => self.active_deviations().await?,
            None => HashMap::new(),
        };
        let check = self.alerts.is_some();
        let (calendar, hours) = (self.calendar.clone(), self.config.forecast_hours);
        let (deviation, model_version) = (self.config.deviation.clone(), version.clone());
        let (forecasts, alerts) = tokio::task::spawn_blocking(move || {
            let mut alerts = Vec::new();
            let forecasts = inference::forecast(
                &model,
                &series,
                &registry,
                &calendar,
                now,
                hours,
                |_, _| {},
                |s, band| {
                    if !check {
                        return;
                    }
                    let who = deviation::Subject {
                        meter_id: &s.meter_id,
                        feeder: registry.get(&s.meter_id).and_then(|m| m.feeder.as_deref()),
                        model_version: &model_version,
                        at: now,
                    };
                    alerts.extend(deviation::check(
                        who,
                        s,
                        origin,
                        band,
                        active.get(&s.meter_id),
                        &deviation,
                    ));
                },
            );
            (forecasts, alerts)
        })
        .await
        .map_err(|e| MlError::Stopped(e.to_string()))?;
        let rows = self
            .store
            .upsert_forecasts(&forecasts, &version, Utc::now())
            .await?;
        metrics::counter!(m::ML_FORECAST_RUNS, "outcome" => "ok").increment(1);
        metrics::counter!(m::ML_FORECAST_ROWS).increment(rows);
        info!(model = %version, subjects = forecasts.len(), rows, "forecasts written");
        if let Some((bus, topic)) = &self.alerts
            && !alerts.is_empty()
        {
            let records = alerts
                .iter()
                .filter_map(|a| Record::json(a.subject().unwrap_or_default().to_owned(), a))
                .collect();
            bus.append(topic, records).await?;
            for a in &alerts {
                metrics::counter!(m::ML_DEVIATION_EVENTS, "event" => a.event.name()).increment(1);
            }
            info!(
                events = alerts.len(),
                "forecast-deviation alert events published"
            );
        }
        self.last = Some(key);
        pass.forecast_rows = Some(rows);
        Ok(pass)
    }
}

#[async_trait]
impl Component for Forecasting {
    fn name(&self) -> &'static str {
        "ml"
    }

    async fn run(mut self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let pass = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                p = self.pass(Utc::now()) => p,
            };
            if let Err(e) = pass {
                metrics::counter!(m::ML_FORECAST_RUNS, "outcome" => "error").increment(1);
                warn!(error = %e, "ml pass failed; retrying at the next interval");
            }
        }
    }
}
