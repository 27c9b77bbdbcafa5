//! Hot functions of ingest: decoding a meter's message (JSON and DSMR P1) and framing MQTT.
//! Run: `cargo bench -p meterstack-core` (release); results in docs/BENCHMARKS.md.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meterstack_core::mqtt;
use meterstack_core::wire::{DecodeConfig, Decoder, dsmr};

fn decode(c: &mut Criterion) {
    let decoder = Decoder::new(DecodeConfig::default());
    let now = Utc::now();
    let one = format!(
        r#"{{"ts":"{}","import_wh":1234567,"export_wh":0,"power_w":412.5,"voltage_v":231.2,"current_a":1.78,"seq":42}}"#,
        (now - chrono::TimeDelta::minutes(15)).to_rfc3339()
    );
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_one_reading", |b| {
        b.iter(|| decoder.decode("meters/m-001/readings", black_box(one.as_bytes()), now))
    });
    let many = format!("[{}]", vec![one.as_str(); 96].join(","));
    group.throughput(Throughput::Elements(96));
    group.bench_function("json_array_of_96", |b| {
        b.iter(|| decoder.decode("meters/m-001/readings", black_box(many.as_bytes()), now))
    });
    let telegram = include_bytes!("../tests/data/dsmr/v5-three-phase-gas-export.txt");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dsmr_p1_telegram", |b| {
        b.iter(|| dsmr::parse(black_box(telegram)))
    });
    group.finish();

    let mut packet = bytes::BytesMut::new();
    mqtt::put_publish(
        &mut packet,
        "meters/m-001/readings",
        Some(7),
        one.as_bytes(),
    );
    c.bench_function("mqtt_frame_and_parse_publish", |b| {
        b.iter(|| {
            let f = mqtt::frame(black_box(&packet), 1 << 20).ok().flatten();
            f.map(|f| mqtt::parse_publish(&packet, f).map(|p| p.topic.len()))
        })
    });
}

criterion_group!(benches, decode);
criterion_main!(benches);
