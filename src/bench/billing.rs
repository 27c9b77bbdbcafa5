//! `meterstack bench billing`: a bill run over `--meters` meters × one month of 15-minute
//! intervals in the trusted zone (written straight as the ETL writes it: one Parquet file per
//! date, sorted by meter and time), on a TOU tariff with tiers and demand charges. Times the
//! first run (every bill new), a second run (every bill unchanged), and reports peak memory.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{Datelike, Duration, Months, NaiveDate};
use meterstack_core::MeterId;
use meterstack_core::store::meters::MeterFields;
use meterstack_lake::paths::Table;
use serde_json::{Value, json};

/// Flags of `meterstack bench billing`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BillingArgs {
    /// Meters billed
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// The month billed, `YYYY-MM` (the first of a year: no carry-in to read)
    #[arg(long, default_value = "2026-01")]
    period: String,
}

/// A TOU tariff with two tiers, TOU and flat demand, a fixed charge and net metering.
fn tariff() -> Value {
    let mut weekday = vec![vec![0; 24]; 12];
    for month in &mut weekday {
        for (h, p) in month.iter_mut().enumerate() {
            *p = if (16..21).contains(&h) { 1 } else { 0 };
        }
    }
    json!({
        "id": "bench-tou",
        "effective_from": "2000-01-01",
        "urdb": {
            "energyratestructure": [
                [{"rate": 0.11, "max": 500.0}, {"rate": 0.14}],
                [{"rate": 0.31, "max": 500.0}, {"rate": 0.36}],
            ],
            "energyweekdayschedule": weekday,
            "energyweekendschedule": vec![vec![0; 24]; 12],
            "demandratestructure": [[{"rate": 1.5}], [{"rate": 6.0}]],
            "demandweekdayschedule": weekday,
            "demandweekendschedule": vec![vec![0; 24]; 12],
            "flatdemandstructure": [[{"rate": 2.0}]],
            "flatdemandmonths": vec![0; 12],
            "fixedchargefirstmeter": 9.5,
            "fixedchargeunits": "$/month",
            "dgrules": "Net Metering",
        }
    })
}

/// Peak resident memory of this process so far, bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One date's `readings` rows for `meters` meters, sorted by meter and time.
fn day_batch(meters: usize, date: NaiveDate) -> anyhow::Result<RecordBatch> {
    let start = date
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp_micros();
    let step = Duration::minutes(15).num_microseconds().unwrap_or(0);
    let rows = meters * 96;
    let mut ids = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    let mut energy = Vec::with_capacity(rows);
    let mut export = Vec::with_capacity(rows);
    let mut quality = Vec::with_capacity(rows);
    let names: Vec<String> = (0..meters).map(|m| format!("b-{m:06}")).collect();
    for (m, name) in names.iter().enumerate() {
        for q in 0..96 {
            let x =
                (m as u64 * 2654435761 + u64::from(date.ordinal()) * 97 + q as u64 * 7919) % 1000;
            let solar = (32..64).contains(&q) && m % 5 == 0;
            ids.push(name.as_str());
            ts.push(start + q as i64 * step);
            energy.push(if solar { 0.0 } else { 40.0 + x as f64 * 0.4 });
            export.push(if solar { x as f64 * 0.3 } else { 0.0 });
            quality.push(if x < 10 { "estimated" } else { "measured" });
        }
    }
    let none = || -> ArrayRef { Arc::new(Float64Array::from(vec![None::<f64>; rows])) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(energy)),
        Arc::new(Float64Array::from(export)),
        none(),
        none(),
        none(),
        Arc::new(StringArray::from(quality)),
        Arc::new(StringArray::from(vec![None::<&str>; rows])),
        Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; rows]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(Table::Readings.schema(), columns)?)
}

/// Runs the benchmark.
pub(crate) async fn run(
    args: &BillingArgs,
    config: &crate::config::Config,
) -> anyhow::Result<Value> {
    let month = NaiveDate::parse_from_str(&format!("{}-01", args.period), "%Y-%m-%d")?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let objects = meterstack_lake::store::LakeConfig::default().build(&data)?;
    let store = meterstack_core::store::StoreConfig::default()
        .build(&data)
        .await?;
    meterstack_billing::import_tariff(&store, &tariff().to_string(), None, None).await?;
    let fields = MeterFields {
        tariff_id: Some(Some("bench-tou".into())),
        ..MeterFields::default()
    };
    let rows: Vec<(MeterId, MeterFields)> = (0..args.meters)
        .map(|m| Ok((MeterId::new(&format!("b-{m:06}"))?, fields.clone())))
        .collect::<anyhow::Result<_>>()?;
    store.upsert_meters(&rows).await?;

    let t = Instant::now();
    let mut day = month;
    let end = month + Months::new(1);
    let mut intervals = 0usize;
    while day < end {
        let batch = day_batch(args.meters, day)?;
        intervals += batch.num_rows();
        let bytes = meterstack_lake::sink::encode_parquet(&batch, Table::Readings)?;
        meterstack_lake::sink::put(&objects, &Table::Readings.trusted_file(day), bytes).await?;
        day = day.succ_opt().unwrap_or(end);
    }
    let write_s = t.elapsed().as_secs_f64();

    let mut query = config.http.query.clone();
    query.timeout = std::time::Duration::from_secs(24 * 3600);
    let lake = meterstack_lake::query::Lake::new(objects, query)?.with_store(store.clone());
    let step = Duration::minutes(15);
    let rss_before = peak_rss();
    let t = Instant::now();
    let first = meterstack_billing::run::run(&lake, &store, chrono_tz::UTC, step, month).await?;
    let run_s = t.elapsed().as_secs_f64();
    let rss_run = peak_rss();
    let t = Instant::now();
    let second = meterstack_billing::run::run(&lake, &store, chrono_tz::UTC, step, month).await?;
    let rerun_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        first.new == args.meters && first.failed.is_empty() && second.unchanged == args.meters,
        "the runs did not bill every meter: {first:?} / {second:?}"
    );
    Ok(json!({
        "meters": args.meters,
        "period": first.period,
        "intervals": intervals,
        "write_trusted_zone_s": write_s,
        "first_run_s": run_s,
        "first_run_bills_per_s": args.meters as f64 / run_s,
        "second_run_s": rerun_s,
        "target_s": 60,
        "peak_rss_before_bytes": rss_before,
        "peak_rss_after_run_bytes": rss_run,
        "days": (end - month).num_days(),
        "month_of_year": month.month(),
    }))
}
