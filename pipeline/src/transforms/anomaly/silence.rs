//! Time-driven anomaly rules, every minute of pipeline time: meters silent for
//! `silent_intervals` raise `meter_silent`, unless enough meters of one feeder are silent
//! together — then one `feeder_outage` names them, and resolves when most are back.

use std::collections::{BTreeMap, BTreeSet};

use meterstack_core::records::{Alert, AlertType};
use serde_json::json;

use super::Subject;
use crate::config::PipelineConfig;
use crate::registry::Registry;
use crate::state::{FeederState, MeterState, ts};

/// Checks every meter's silence at `now` (µs) on a grid of `dt` (µs).
pub(crate) fn tick(
    meters: &mut BTreeMap<String, MeterState>,
    feeders: &mut BTreeMap<String, FeederState>,
    registry: &Registry,
    config: &PipelineConfig,
    now: i64,
    dt: i64,
    out: &mut Vec<Alert>,
) {
    // Silent meters, grouped by feeder.
    let mut silent_by_feeder: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut silent_alone: Vec<String> = Vec::new();
    for (id, ms) in meters.iter() {
        let info = registry.get(id);
        let rules = config.rules_for(info.and_then(|i| i.class));
        let limit = i64::from(rules.silent_intervals) * dt + dt / 2;
        if now - ms.last_received <= limit || ms.feeder_out {
            continue;
        }
        match info.and_then(|i| i.feeder.clone()) {
            Some(f) => silent_by_feeder.entry(f).or_default().push(id.clone()),
            None => silent_alone.push(id.clone()),
        }
    }
    // Feeders: open an outage when enough meters are silent together; close it when most
    // of its meters are back.
    let fo = &config.feeder_outage;
    let feeder_names: BTreeSet<String> = feeders
        .keys()
        .cloned()
        .chain(silent_by_feeder.keys().cloned())
        .collect();
    for feeder in feeder_names {
        let silent = silent_by_feeder.remove(&feeder).unwrap_or_default();
        let size = registry.feeder_size(&feeder).max(1);
        let fs = feeders.entry(feeder.clone()).or_default();
        let who = Subject {
            meter: None,
            feeder: Some(&feeder),
        };
        let enough =
            silent.len() >= fo.min_meters && silent.len() as f64 >= fo.min_share * size as f64;
        if !fs.alerts.is_open(AlertType::FeederOutage) && enough {
            let start = silent
                .iter()
                .filter_map(|id| meters.get(id)?.track.last_ts())
                .min()
                .map_or(now, |t| t + dt);
            fs.alerts.open(
                AlertType::FeederOutage,
                who,
                start,
                now,
                json!({ "meters": silent, "feeder_meters": size }),
                out,
            );
            for id in &silent {
                if let Some(ms) = meters.get_mut(id) {
                    ms.feeder_out = true;
                    let mw = Subject {
                        meter: Some(id),
                        feeder: Some(&feeder),
                    };
                    ms.alerts.resolve(
                        AlertType::MeterSilent,
                        mw,
                        now,
                        now,
                        json!({ "cause": "feeder_outage" }),
                        out,
                    );
                }
            }
            fs.out = silent.into_iter().collect();
            continue;
        }
        if fs.alerts.is_open(AlertType::FeederOutage) {
            let still_out = fs
                .out
                .iter()
                .filter(|id| meters.get(*id).is_some_and(|ms| ms.feeder_out))
                .count();
            if (still_out as f64) < fo.min_share * fs.out.len() as f64 {
                let restored = fs.out.len() - still_out;
                fs.alerts.resolve(
                    AlertType::FeederOutage,
                    who,
                    now,
                    now,
                    json!({ "meters": fs.out, "restored": restored }),
                    out,
                );
                fs.out.clear();
            }
        }
        if !enough {
            silent_alone.extend(silent);
        }
    }
    for id in silent_alone {
        let Some(ms) = meters.get_mut(&id) else {
            continue;
        };
        let feeder = registry.get(&id).and_then(|i| i.feeder.clone());
        let since = ms.track.last_ts().map_or(ms.last_received, |t| t + dt);
        let who = Subject {
            meter: Some(&id),
            feeder: feeder.as_deref(),
        };
        ms.alerts.open(
            AlertType::MeterSilent,
            who,
            since,
            now,
            json!({ "last_received": ts(ms.last_received) }),
            out,
        );
    }
}
