#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use meterstack_core::bus::Record;
use meterstack_core::store::meters::MeterClass;
use meterstack_core::wire;

use super::*;
use crate::registry::MeterInfo;
use crate::state::ts;
use meterstack_core::records::{AlertEvent, MeterWindow, Width};

const DT: i64 = 900_000_000;

fn t0() -> i64 {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros()
}

fn processor(meters: &[(&str, &str)]) -> Processor {
    let registry = Registry::new(meters.iter().map(|(id, feeder)| {
        (
            (*id).to_owned(),
            MeterInfo {
                class: Some(MeterClass::Household),
                feeder: Some((*feeder).to_owned()),
                rated_current_a: Some(63.0),
                exchanged_on: None,
            },
        )
    }));
    let config = PipelineConfig {
        idle_clock: std::time::Duration::ZERO,
        ..PipelineConfig::default()
    };
    Processor::new(config, Arc::new(registry), State::default())
}

/// A reading of `meter` for the interval ending at step `k`, received `delay_us` later.
fn send(p: &mut Processor, meter: &str, k: i64, import_wh: f64, delay_us: i64, out: &mut Outputs) {
    let reading = Reading {
        meter_id: meterstack_core::MeterId::new(meter).unwrap(),
        ts: ts(t0() + k * DT),
        import_wh,
        export_wh: Some(0.0),
        power_w: Some(400.0),
        voltage_v: Some(231.0),
        current_a: Some(1.7),
        seq: None,
    };
    let record = Record {
        key: meter.into(),
        value: wire::encode(std::slice::from_ref(&reading)).into(),
        timestamp: ts(t0() + k * DT + delay_us),
        headers: vec![(
            headers::SOURCE_TOPIC.into(),
            wire::readings_topic(&reading.meter_id),
        )],
    };
    p.record(&record, out);
    p.flush(out);
}

fn windows(out: &Outputs, width: Width) -> Vec<&MeterWindow> {
    out.aggregates
        .iter()
        .filter_map(|a| match a {
            Aggregate::MeterWindow(w) if w.window == width => Some(w),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reading_inside_the_allowed_lateness_restates_its_windows_and_a_later_one_does_not() {
    let mut p = processor(&[("m-1", "f-1")]);
    let mut out = Outputs::default();
    for k in 0..=4 {
        if k != 2 {
            send(
                &mut p,
                "m-1",
                k,
                1000.0 + 100.0 * k as f64,
                200_000,
                &mut out,
            );
        }
    }
    // Step 2 arrives 40 minutes late: inside the hour of allowed lateness.
    send(&mut p, "m-1", 2, 1190.0, 40 * 60_000_000, &mut out);
    let hour: Vec<_> = windows(&out, Width::Hour)
        .into_iter()
        .filter(|w| w.start == ts(t0()))
        .collect();
    assert_eq!(hour.len(), 2, "{hour:?}");
    assert_eq!(hour[0].revision, 0);
    assert_eq!(
        hour[0].estimated_intervals, 2,
        "the hole was estimated first"
    );
    assert_eq!(
        (
            hour[1].revision,
            hour[1].energy_wh,
            hour[1].measured_intervals
        ),
        (1, 400.0, 4)
    );
    let clean = out.clean.last().unwrap();
    assert_eq!(clean.rule, Some(Rule::OutOfOrder));

    // Hours later, a reading for step 6 (skipped) comes after step 12: it is late.
    let mut out = Outputs::default();
    for k in 5..=12 {
        if k != 6 {
            send(
                &mut p,
                "m-1",
                k,
                1000.0 + 100.0 * k as f64,
                200_000,
                &mut out,
            );
        }
    }
    let before = out.aggregates.len();
    send(&mut p, "m-1", 6, 1600.0, 7 * DT, &mut out);
    assert_eq!(out.clean.last().unwrap().rule, Some(Rule::Late));
    assert_eq!(
        out.aggregates.len(),
        before,
        "late readings restate nothing"
    );
}

#[test]
fn a_silent_feeder_raises_one_feeder_alert_and_restoration_resolves_it() {
    let meters: Vec<String> = (0..5).map(|i| format!("m-{i}")).collect();
    let pairs: Vec<(&str, &str)> = meters.iter().map(|m| (m.as_str(), "f-1")).collect();
    let mut p = processor(&pairs);
    let mut out = Outputs::default();
    let mut import = [1000.0; 5];
    for k in 0..=12 {
        for (i, m) in meters.iter().enumerate() {
            // Meters 0–3 lose supply from step 4 to step 9; meter 4 keeps reporting.
            if (4..10).contains(&k) && i < 4 {
                continue;
            }
            import[i] += 100.0;
            send(&mut p, m, k, import[i], 200_000, &mut out);
        }
    }
    let opened: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEvent::Opened)
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].kind, AlertType::FeederOutage);
    assert_eq!(opened[0].evidence["meters"].as_array().unwrap().len(), 4);
    let resolved: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.event == AlertEvent::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].alert_id, opened[0].alert_id);
    // The silent intervals are zeros attributed to the feeder outage.
    let outage = windows(&out, Width::Interval)
        .into_iter()
        .filter(|w| w.rules.contains(&Rule::FeederOutage))
        .count();
    assert_eq!(outage, 4 * 6, "steps 4–9 of meters 0–3");
}
