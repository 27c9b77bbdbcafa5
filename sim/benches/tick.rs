//! The simulator's per-reading cost: one meter's tick, and the shared per-tick context.
//! Run: `cargo bench -p meterstack-sim` (release); results in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use meterstack_sim::load::{TickContext, Weather};
use meterstack_sim::meter::Meter;
use meterstack_sim::{FaultConfig, FleetConfig, RunShape, build_fleet};

fn tick(c: &mut Criterion) {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let shape = RunShape {
        start,
        dt: TimeDelta::minutes(15),
        horizon: None,
        seed: 1,
        faults: Arc::new(FaultConfig::default()),
        buffer: 96,
    };
    let fleet = FleetConfig {
        meters: 1,
        ..FleetConfig::default()
    };
    let Ok(site) = fleet.site() else { return };
    let Ok(specs) = build_fleet(&fleet, &shape) else {
        return;
    };
    let weather = Weather::new(1);
    c.bench_function("tick_context", |b| {
        b.iter(|| TickContext::new(black_box(start), shape.dt, &site, &weather))
    });
    let ctx = TickContext::new(start, shape.dt, &site, &weather);
    let mut meter = Meter::new(specs[0].clone(), shape.clone());
    c.bench_function("meter_tick", |b| b.iter(|| meter.tick(black_box(&ctx))));
}

criterion_group!(benches, tick);
criterion_main!(benches);
