//! `meterstack backfill`: a simulated fleet's history written straight to the raw zone, in the
//! raw sink's layout (`raw/readings/date=…/`, the sink's schema and encoding), so SQL and
//! training have months of data in minutes.
//!
//! Meters are split into chunks; two worker threads step their chunks' meters through the
//! history (the same [`meterstack_sim::meter::Meter`] the MQTT simulator drives) and encode
//! Parquet, rows sorted by meter and time; the async side stores the files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use meterstack_lake::paths::Table;
use meterstack_lake::sink::put;
use meterstack_lake::sink::raw::{HourFile, RawHours};
use meterstack_sim::load::{TickContext, Weather};
use meterstack_sim::offline::{Offline, Received};
use meterstack_sim::{Label, SimConfig, build_fleet};
use object_store::ObjectStore;
use serde::Serialize;

/// What a backfill wrote.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    meters: usize,
    intervals: u64,
    pub(crate) readings: u64,
    files: u64,
    bytes: u64,
    bytes_per_reading: f64,
    labels: usize,
    seconds: f64,
    readings_per_s: f64,
}

/// Rows buffered per worker before a flush.
const FLUSH_ROWS: usize = 1_000_000;

/// Generates the history of `sim` (its start, interval count, fleet and faults) and stores it.
pub(crate) async fn write(
    sim: &SimConfig,
    store: Arc<dyn ObjectStore>,
    chunk: usize,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let site = sim.fleet.site()?;
    let shape = sim.shape()?;
    let intervals = sim.intervals.unwrap_or(0);
    let specs = build_fleet(&sim.fleet, &shape).map_err(|e| anyhow::anyhow!(e))?;
    let meters = specs.len();
    let chunks: Vec<Vec<_>> = specs.chunks(chunk).map(<[_]>::to_vec).collect();
    let total = meters as u64 * intervals;
    let progress =
        indicatif::ProgressBar::new(total).with_style(indicatif::ProgressStyle::with_template(
            "{bar:40} {percent:>3}% {human_pos}/{human_len} readings · {per_sec} · eta {eta}",
        )?);
    let generated = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<HourFile>(4);
    let next_chunk = Arc::new(AtomicUsize::new(0));
    let chunks = Arc::new(chunks);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(chunks.len())
        .max(1);
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (tx, chunks, next_chunk, generated) = (
            tx.clone(),
            chunks.clone(),
            next_chunk.clone(),
            generated.clone(),
        );
        let shape = shape.clone();
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<Label>> {
            let weather = Weather::new(shape.seed);
            let mut labels = Vec::new();
            loop {
                let i = next_chunk.fetch_add(1, Ordering::Relaxed);
                let Some(specs) = chunks.get(i) else {
                    return Ok(labels);
                };
                let mut offline = Offline::new(specs.clone(), &shape, site);
                let mut rows: Vec<Received> = Vec::new();
                for k in 0..intervals {
                    let t = shape.start + shape.dt * i32::try_from(k)?;
                    offline.step_with(
                        &TickContext::new(t, shape.dt, &site, &weather),
                        &mut rows,
                        &mut labels,
                    );
                    if k + 1 == intervals {
                        offline.finish(t, &mut rows);
                    }
                    if rows.len() >= FLUSH_ROWS || k + 1 == intervals {
                        generated.fetch_add(rows.len() as u64, Ordering::Relaxed);
                        for file in encode(std::mem::take(&mut rows))? {
                            tx.blocking_send(file)
                                .map_err(|_| anyhow::anyhow!("the writer stopped"))?;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            file = rx.recv() => {
                let Some(file) = file else { break };
                bytes += file.bytes.len() as u64;
                put(&store, &Table::RawReadings.new_file(file.hour), file.bytes).await?;
                files += 1;
            }
            _ = ticker.tick() => progress.set_position(generated.load(Ordering::Relaxed)),
        }
    }
    let mut labels = Vec::new();
    for h in handles {
        labels.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a backfill worker panicked"))??,
        );
    }
    progress.finish_and_clear();
    if let Some(path) = &sim.labels {
        labels.sort_by(|a, b| (a.start, &a.meter, a.kind).cmp(&(b.start, &b.meter, b.kind)));
        let mut out = String::new();
        for l in &labels {
            out.push_str(&serde_json::to_string(l)?);
            out.push('\n');
        }
        std::fs::write(path, out).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let readings = generated.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        meters,
        intervals,
        readings,
        files,
        bytes,
        bytes_per_reading: bytes as f64 / readings.max(1) as f64,
        labels: labels.len(),
        seconds,
        readings_per_s: (readings as f64 / seconds).round(),
    })
}

/// One Parquet file per reading hour (the raw zone's partitions), as the raw sink writes them.
fn encode(rows: Vec<Received>) -> anyhow::Result<Vec<HourFile>> {
    let mut hours = RawHours::default();
    for (reading, received) in rows {
        hours.push(reading, received);
    }
    Ok(hours.encode()?)
}
