#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::TimeZone;

use super::*;
use crate::load::Site;
use crate::offline::{Offline, Received};

fn site() -> Site {
    FleetConfig::default().site().unwrap()
}

fn shape(faults: FaultConfig, days: i64) -> RunShape {
    RunShape {
        start: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).single().unwrap(),
        dt: TimeDelta::minutes(15),
        horizon: Some(TimeDelta::days(days)),
        seed: 42,
        faults: Arc::new(faults),
        buffer: 96,
    }
}

fn run(meters: usize, faults: FaultConfig, days: i64) -> (Vec<Received>, Vec<Label>, RunShape) {
    let shape = shape(faults, days);
    let fleet = FleetConfig {
        meters,
        meters_per_feeder: 10,
        ..FleetConfig::default()
    };
    let specs = build_fleet(&fleet, &shape).unwrap();
    let (out, labels) = Offline::run(specs, &shape, site(), days as u64 * 96);
    (out, labels, shape)
}

#[test]
fn a_clean_fleet_has_growing_registers_plausible_voltage_and_solar_export() {
    let (out, labels, _) = run(60, FaultConfig::none(), 3);
    assert!(labels.is_empty());
    assert_eq!(out.len(), 60 * 3 * 96);
    let mut last: std::collections::HashMap<&str, (f64, f64)> = Default::default();
    let mut exporting = 0;
    for (r, _) in &out {
        let prev = last.entry(r.meter_id.as_str()).or_insert((0.0, 0.0));
        assert!(
            r.import_wh >= prev.0 && r.export_wh.unwrap() >= prev.1,
            "registers only grow"
        );
        *prev = (r.import_wh, r.export_wh.unwrap());
        let v = r.voltage_v.unwrap();
        assert!(
            (0.9 * NOMINAL_V..1.1 * NOMINAL_V).contains(&v),
            "voltage {v}"
        );
        if r.power_w.unwrap() < 0.0 {
            exporting += 1;
        }
    }
    assert!(exporting > 0, "prosumers export on June days");
}

#[test]
fn the_same_seed_gives_the_same_readings_and_faults() {
    let faults = FaultConfig {
        scale: 5.0,
        ..FaultConfig::default()
    };
    let (a, la, _) = run(20, faults.clone(), 2);
    let (b, lb, _) = run(20, faults, 2);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    // Faults do not change what the meters consume: a clean run has the same power where
    // neither run has a fault.
    let (clean, _, _) = run(20, FaultConfig::none(), 2);
    let same = clean
        .iter()
        .filter(|c| {
            a.iter().any(|f| {
                f.0.meter_id == c.0.meter_id && f.0.ts == c.0.ts && f.0.power_w == c.0.power_w
            })
        })
        .count();
    assert!(
        same as f64 > 0.8 * clean.len() as f64,
        "{same} of {}",
        clean.len()
    );
}

#[test]
fn every_label_is_true_of_the_received_readings() {
    let mut faults = FaultConfig {
        scale: 8.0,
        ..FaultConfig::default()
    };
    for kind in [
        FaultType::RegisterRollover,
        FaultType::MeterExchange,
        FaultType::RegisterReset,
    ] {
        faults.rates.insert(kind, 0.01);
    }
    let days = 10;
    let (out, labels, shape) = run(80, faults, days);
    let last = shape.start + shape.dt * (days * 96 - 1) as i32;
    let errors = crate::verify::check(&labels, &out, shape.dt, shape.start, last);
    assert!(
        errors.is_empty(),
        "{} of {} labels contradicted:\n{}",
        errors.len(),
        labels.len(),
        errors.join("\n")
    );
    let kinds: BTreeSet<FaultType> = labels.iter().map(|l| l.kind).collect();
    let missing: Vec<_> = FaultType::ALL
        .iter()
        .filter(|k| !kinds.contains(k))
        .collect();
    assert!(missing.is_empty(), "no {missing:?} injected");
}

#[test]
fn the_checker_notices_when_data_contradicts_a_label() {
    let faults = FaultConfig {
        scale: 8.0,
        ..FaultConfig::default()
    };
    let (mut out, labels, shape) = run(40, faults, 3);
    let last = shape.start + shape.dt * (3 * 96 - 1);
    let gap = labels.iter().find(|l| l.kind == FaultType::Gap).unwrap();
    let mut fake = out
        .iter()
        .find(|r| r.0.meter_id.as_str() == gap.meter.as_deref().unwrap())
        .unwrap()
        .clone();
    fake.0.ts = gap.start;
    out.push(fake);
    let errors = crate::verify::check(std::slice::from_ref(gap), &out, shape.dt, shape.start, last);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn a_meter_resends_what_its_buffer_holds() {
    let shape = shape(FaultConfig::none(), 2);
    let specs = build_fleet(
        &FleetConfig {
            meters: 1,
            ..FleetConfig::default()
        },
        &shape,
    )
    .unwrap();
    let mut meter = Meter::new(specs[0].clone(), shape.clone());
    let weather = crate::load::Weather::new(1);
    let mut sent = Vec::new();
    for k in 0..200 {
        let ctx = TickContext::new(shape.start + shape.dt * k, shape.dt, &site(), &weather);
        sent.extend(meter.tick(&ctx).due);
    }
    assert_eq!(sent.len(), 200);
    // The buffer holds the last 96: an older range finds nothing, a recent one everything.
    let at = |k: i32| shape.start + shape.dt * k;
    assert_eq!(meter.resend(at(10), at(20)), 0);
    assert_eq!(meter.resend(at(150), at(160)), 10);
    assert_eq!(meter.drain(), sent[150..160].to_vec());
}

#[test]
fn the_registry_csv_names_class_feeder_and_exchange() {
    let mut faults = FaultConfig::default();
    faults.rates.insert(FaultType::MeterExchange, 1.0);
    let shape = shape(faults, 5);
    let specs = build_fleet(
        &FleetConfig {
            meters: 45,
            meters_per_feeder: 20,
            ..FleetConfig::default()
        },
        &shape,
    )
    .unwrap();
    let csv = registry_csv(&specs);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 46);
    assert!(lines[0].starts_with("meter_id,feeder,"));
    assert!(lines[1].starts_with("m-001,f-01,"));
    assert!(lines[45].starts_with("m-045,f-03,"));
    assert!(specs.iter().all(|s| s.exchanged_on.is_some()));
    let feeders: Vec<usize> = specs
        .iter()
        .filter_map(|s| s.feeder_members.as_ref().map(|m| m.len()))
        .collect();
    assert_eq!(feeders, [20, 20, 5]);
}
