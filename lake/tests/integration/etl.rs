//! The ETL raw → trusted on real object stores: local disk always, and the S3-compatible
//! server `.ci/run` starts (`METERSTACK_TEST_S3=http://host:port`; each test uses a fresh
//! bucket).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt;
use meterstack_core::reading::{MeterId, Reading};
use meterstack_lake::etl::{EtlConfig, EtlReport};
use meterstack_lake::paths::Table;
use meterstack_lake::query::{Format, Lake, QueryConfig};
use meterstack_lake::sink::put;
use meterstack_lake::sink::raw::encode_raw_readings;
use meterstack_lake::store::{S3Config, StoreConfig};
use meterstack_pipeline::{PipelineConfig, Registry};
use object_store::{ObjectStore, ObjectStoreExt};

/// The stores every test runs on: a local directory, and S3 when the test server is there.
pub(crate) fn stores(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn ObjectStore>)> {
    let local = StoreConfig::Local {
        path: Some(dir.join("lake")),
    }
    .build(dir)
    .expect("local store");
    let mut out = vec![("local", local)];
    if let Some(s3) = s3_store() {
        out.push(("s3", s3));
    }
    out
}

/// A store on a fresh bucket of the S3-compatible test server, if one is configured.
pub(crate) fn s3_store() -> Option<Arc<dyn ObjectStore>> {
    let endpoint = std::env::var("METERSTACK_TEST_S3").ok()?;
    let bucket = format!("t{}", uuid::Uuid::now_v7().simple());
    // The test server takes unsigned bucket creation.
    ureq::put(&format!("{endpoint}/{bucket}"))
        .send_empty()
        .unwrap_or_else(|e| panic!("cannot create bucket {bucket} at {endpoint}: {e}"));
    let config = StoreConfig::S3(S3Config {
        bucket,
        prefix: "lake".into(),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        path_style: true,
        allow_http: true,
    });
    Some(config.build(std::path::Path::new(".")).expect("s3 store"))
}

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

pub(crate) fn reading(meter: &str, ts: DateTime<Utc>, import_wh: f64) -> Reading {
    Reading {
        meter_id: MeterId::new(meter).expect("id"),
        ts,
        import_wh,
        export_wh: Some(0.0),
        power_w: Some(400.0),
        voltage_v: Some(230.0),
        current_a: None,
        seq: None,
    }
}

/// A meter's readings every 15 minutes over `[from, to]`, `wh` per interval.
pub(crate) fn series(meter: &str, from: DateTime<Utc>, to: DateTime<Utc>, wh: f64) -> Vec<Reading> {
    let mut out = Vec::new();
    let mut t = from;
    let mut register = 10_000.0;
    while t <= to {
        out.push(reading(meter, t, register));
        register += wh;
        t += TimeDelta::minutes(15);
    }
    out
}

/// Stores `readings` in the raw zone as the sink would (one file per hour), received at
/// `received`.
pub(crate) async fn write_raw(
    store: &Arc<dyn ObjectStore>,
    readings: &[Reading],
    received: DateTime<Utc>,
) {
    let mut by_hour: std::collections::BTreeMap<i64, Vec<Reading>> = Default::default();
    for r in readings {
        by_hour
            .entry(r.ts.timestamp().div_euclid(3600))
            .or_default()
            .push(r.clone());
    }
    for (hour, rows) in by_hour {
        let received_at = vec![received.timestamp_micros(); rows.len()];
        let path =
            Table::RawReadings.new_file(DateTime::from_timestamp(hour * 3600, 0).expect("hour"));
        let bytes = encode_raw_readings(rows, received_at).expect("parquet");
        put(store, &path, bytes).await.expect("put");
    }
}

pub(crate) async fn etl(
    store: &Arc<dyn ObjectStore>,
    config: &EtlConfig,
    now: DateTime<Utc>,
) -> EtlReport {
    config
        .build(&PipelineConfig::default(), store.clone())
        .run_once(Arc::new(Registry::default()), now, &|_| {})
        .await
        .expect("etl runs")
}

/// The rows of `sql` as JSON objects.
pub(crate) async fn rows(store: &Arc<dyn ObjectStore>, sql: &str) -> Vec<serde_json::Value> {
    let lake = Lake::new(store.clone(), QueryConfig::default()).expect("lake");
    let mut result = lake.query(sql, None, Format::Json).await.expect("query");
    let mut body = Vec::new();
    while let Some(chunk) = result.next_chunk().await {
        body.extend_from_slice(&chunk.expect("chunk"));
    }
    serde_json::from_slice(&body).expect("json")
}

async fn scalar(store: &Arc<dyn ObjectStore>, sql: &str) -> f64 {
    let rows = rows(store, sql).await;
    let row = rows.first().and_then(|r| r.as_object()).expect("one row");
    row.values()
        .next()
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

async fn objects(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let listed: Vec<_> = store
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await
        .expect("list");
    let mut out = Vec::new();
    for o in listed {
        let bytes = store
            .get(&o.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.push((o.location.to_string(), bytes.to_vec()));
    }
    out.sort();
    out
}

const NOW: &str = "2026-11-25T06:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_leave_no_duplicates_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, store) in stores(dir.path()) {
        let day = series(
            "m-1",
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
            100.0,
        );
        let other = series(
            "m-2",
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
            50.0,
        );
        // At-least-once: the whole day of m-1 is delivered three times, in different files.
        for _ in 0..3 {
            write_raw(&store, &day, at("2026-11-24T00:05:00Z")).await;
        }
        write_raw(&store, &other, at("2026-11-24T00:05:00Z")).await;
        let config = EtlConfig::default();
        let report = etl(&store, &config, at(NOW)).await;
        // Counted each time a day is read (the 23rd is read for itself and as the 24th's context).
        assert!(
            report.duplicates >= 2 * day.len() as u64,
            "{name}: {report:?}"
        );
        assert!(
            report
                .dates_restated
                .contains(&NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"))
        );

        let dupes = rows(&store, "SELECT meter_id, ts, count(*) AS n FROM readings GROUP BY meter_id, ts HAVING count(*) > 1").await;
        assert!(dupes.is_empty(), "{name}: {dupes:?}");
        // 96 intervals of the 23rd per meter, all measured, energy per interval exact.
        let per_meter = rows(&store, "SELECT meter_id, count(*) AS n, sum(energy_wh) AS wh, min(quality) AS q FROM readings WHERE date = '2026-11-23' GROUP BY meter_id ORDER BY meter_id").await;
        assert_eq!(
            per_meter,
            vec![
                serde_json::json!({"meter_id": "m-1", "n": 96, "wh": 9600.0, "q": "measured"}),
                serde_json::json!({"meter_id": "m-2", "n": 96, "wh": 4800.0, "q": "measured"}),
            ],
            "{name}"
        );
        let daily = scalar(
            &store,
            "SELECT energy_wh FROM readings_daily WHERE meter_id = 'm-1' AND date = '2026-11-23'",
        )
        .await;
        assert_eq!(daily, 9600.0, "{name}");
        let hourly = rows(&store, "SELECT count(*) AS n, sum(energy_wh) AS wh FROM readings_hourly WHERE meter_id = 'm-1' AND date = '2026-11-23'").await;
        assert_eq!(
            hourly,
            vec![serde_json::json!({"n": 24, "wh": 9600.0})],
            "{name}"
        );

        // Nothing new: nothing restated. Forgetting the bookmark restates every date with
        // byte-identical partitions.
        let before = objects(&store, "trusted").await;
        let again = etl(&store, &config, at(NOW)).await;
        assert_eq!(
            (again.new_files, again.dates_restated.len()),
            (0, 0),
            "{name}"
        );
        store
            .delete(&object_store::path::Path::from(
                meterstack_lake::etl::BOOKMARK,
            ))
            .await
            .expect("delete bookmark");
        let full = etl(&store, &config, at(NOW)).await;
        assert!(!full.dates_restated.is_empty());
        assert_eq!(
            objects(&store, "trusted").await,
            before,
            "{name}: a rerun changed the trusted zone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reading_moves_the_daily_total_by_exactly_its_energy() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, store) in stores(dir.path()) {
        let all = series(
            "m-1",
            at("2026-11-23T00:00:00Z"),
            at("2026-11-23T12:15:00Z"),
            120.0,
        );
        let (early, late) = all.split_at(all.len() - 1);
        write_raw(&store, early, at("2026-11-23T12:01:00Z")).await;
        let config = EtlConfig::default();
        etl(&store, &config, at(NOW)).await;
        let q =
            "SELECT energy_wh FROM readings_daily WHERE meter_id = 'm-1' AND date = '2026-11-23'";
        let before = scalar(&store, q).await;
        assert_eq!(before, 48.0 * 120.0, "{name}");

        // Arrives three hours late, beyond the live pipeline's allowed lateness.
        write_raw(&store, late, at("2026-11-23T15:20:00Z")).await;
        let report = etl(&store, &config, at(NOW)).await;
        assert_eq!(report.new_files, 1, "{name}");
        let after = scalar(&store, q).await;
        let energy = late[0].import_wh - early[early.len() - 1].import_wh;
        assert_eq!(after - before, energy, "{name}");
        let n = scalar(
            &store,
            "SELECT count(*) FROM readings WHERE meter_id = 'm-1'",
        )
        .await;
        assert_eq!(n, 49.0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_estimated_and_conserves_the_register_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = stores(dir.path()).remove(0).1;
    let mut day = series(
        "m-1",
        at("2026-11-23T00:00:00Z"),
        at("2026-11-24T00:00:00Z"),
        100.0,
    );
    // Two readings lost at 10:15 and 10:30: the three intervals from 10:00 to 10:45 are
    // estimated (even shares of the register difference).
    day.retain(|r| r.ts != at("2026-11-23T10:15:00Z") && r.ts != at("2026-11-23T10:30:00Z"));
    write_raw(&store, &day, at("2026-11-24T00:05:00Z")).await;
    etl(&store, &EtlConfig::default(), at(NOW)).await;
    let got = rows(&store, "SELECT quality, count(*) AS n, sum(energy_wh) AS wh FROM readings GROUP BY quality ORDER BY quality").await;
    assert_eq!(
        got,
        vec![
            serde_json::json!({"quality": "estimated", "n": 3, "wh": 300.0}),
            serde_json::json!({"quality": "measured", "n": 93, "wh": 9300.0}),
        ]
    );
    let daily = rows(&store, "SELECT energy_wh, expected_intervals, measured_intervals, estimated_intervals FROM readings_daily").await;
    assert_eq!(
        daily,
        vec![
            serde_json::json!({"energy_wh": 9600.0, "expected_intervals": 96, "measured_intervals": 93, "estimated_intervals": 3})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_closed_hours_and_retention_drops_old_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, store) in stores(dir.path()) {
        let day = series(
            "m-1",
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
            100.0,
        );
        // Each reading in its own file, and the hour 10 delivered twice (a replay).
        for r in &day {
            write_raw(&store, std::slice::from_ref(r), at("2026-11-24T00:05:00Z")).await;
        }
        let replay: Vec<Reading> = day
            .iter()
            .filter(|r| r.ts.format("%H").to_string() == "10")
            .cloned()
            .collect();
        write_raw(&store, &replay, at("2026-11-24T00:05:00Z")).await;
        let old = series(
            "m-1",
            at("2026-10-01T00:00:00Z"),
            at("2026-10-01T01:00:00Z"),
            100.0,
        );
        write_raw(&store, &old, at("2026-10-01T02:00:00Z")).await;

        let config = EtlConfig::default();
        // First run in early October: October is recent, November's hours not closed yet.
        let report = etl(&store, &config, at("2026-10-02T06:00:00Z")).await;
        assert_eq!(
            (report.partitions_expired, report.files_compacted),
            (0, 0),
            "{name}: {report:?}"
        );
        let trusted = objects(&store, "trusted/readings/date=2026-11-23").await;
        assert!(!trusted.is_empty());

        // Now: raw October is past its 30 days, November's hours are closed. Merged and
        // expired files are retired, and deleted by the first run after their grace.
        let report = etl(&store, &config, at(NOW)).await;
        assert!(report.partitions_expired >= 1, "{name}: {report:?}");
        assert_eq!(report.files_compacted, 97, "{name}: {report:?}");
        assert_eq!(report.files_deleted, 0, "{name}: {report:?}");
        assert_eq!(
            objects(&store, "raw/readings/date=2026-11-23").await.len(),
            97 + 24,
            "{name}: originals stay for the grace"
        );
        let later = at(NOW) + config.delete_grace;
        let report = etl(&store, &config, later).await;
        assert_eq!(
            (
                report.files_deleted,
                report.new_files,
                report.files_compacted
            ),
            (97 + old.len().div_ceil(4), 0, 0),
            "{name}: {report:?}"
        );
        assert_eq!(
            objects(&store, "raw/readings/date=2026-11-23").await.len(),
            24,
            "{name}: one file per closed hour"
        );
        let n = scalar(
            &store,
            "SELECT count(*) FROM raw_readings WHERE date = '2026-11-23'",
        )
        .await;
        assert_eq!(
            n, 96.0,
            "{name}: exact redeliveries are dropped by compaction"
        );
        assert!(
            objects(&store, "raw/readings/date=2026-10-01")
                .await
                .is_empty(),
            "{name}"
        );
        assert!(
            !objects(&store, "trusted/readings/date=2026-10-01")
                .await
                .is_empty(),
            "{name}: trusted keeps 7 years"
        );
        assert_eq!(
            objects(&store, "trusted/readings/date=2026-11-23").await,
            trusted,
            "{name}: compaction changed trusted data"
        );
        // Compacted files are bookmarked: the next run has nothing to do.
        let report = etl(&store, &config, later).await;
        assert_eq!(
            (report.new_files, report.dates_restated.len()),
            (0, 0),
            "{name}: {report:?}"
        );
    }
}

/// A query plans (lists its files) before compaction, retention and a restatement run, and
/// executes after: merged and expired files are still there within their grace, and a
/// deleted file or a trusted partition replaced in place fails as the retryable `Changed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_listed_before_compaction_and_retention_still_read_their_files() {
    use datafusion::physical_plan::collect;

    async fn stale(
        store: &Arc<dyn ObjectStore>,
        sql: &str,
    ) -> (
        Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        Arc<datafusion::execution::TaskContext>,
    ) {
        let lake = Lake::new(store.clone(), QueryConfig::default()).expect("lake");
        let frame = lake.plan(sql, None).await.expect("plans");
        let task = Arc::new(frame.task_ctx());
        (frame.create_physical_plan().await.expect("lists"), task)
    }
    fn count(batches: &[arrow::record_batch::RecordBatch]) -> i64 {
        let column = batches[0].column(0);
        column
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("count")
            .value(0)
    }

    let dir = tempfile::tempdir().expect("tempdir");
    for (name, store) in stores(dir.path()) {
        let day = series(
            "m-1",
            at("2026-11-23T10:00:00Z"),
            at("2026-11-23T10:45:00Z"),
            100.0,
        );
        for r in &day {
            write_raw(&store, std::slice::from_ref(r), at("2026-11-23T11:00:00Z")).await;
        }
        write_raw(
            &store,
            &series(
                "m-1",
                at("2026-10-01T00:00:00Z"),
                at("2026-10-01T00:45:00Z"),
                100.0,
            ),
            at("2026-10-01T01:00:00Z"),
        )
        .await;
        let config = EtlConfig::default();
        etl(&store, &config, at("2026-10-01T02:00:00Z")).await;

        // Sums read the files (a bare count(*) comes from the statistics of planning).
        let raw = "SELECT count(*) AS n, sum(import_wh) AS s FROM raw_readings";
        let (plan, task) = stale(&store, raw).await;
        let report = etl(&store, &config, at(NOW)).await;
        assert_eq!(
            (report.files_compacted, report.partitions_expired),
            (4, 1),
            "{name}: {report:?}"
        );
        let batches = collect(plan, task)
            .await
            .expect("the listed files are still there");
        assert_eq!(count(&batches), 8, "{name}: what was listed");

        // After the grace, a query listed before the deletion fails as `Changed`.
        let (plan, task) = stale(&store, raw).await;
        let report = etl(&store, &config, at(NOW) + config.delete_grace).await;
        assert_eq!(report.files_deleted, 5, "{name}: {report:?}");
        let e = collect(plan, task).await.expect_err("files are gone");
        let e = meterstack_lake::query::engine_error(e);
        assert!(
            matches!(e, meterstack_lake::Error::Changed(_)),
            "{name}: {e:?}"
        );
        assert_eq!(
            rows(&store, raw).await[0]["n"],
            4,
            "{name}: a fresh query sees the merged hour once"
        );

        // A trusted partition replaced in place under a listed query.
        let daily =
            "SELECT count(*) AS n, sum(energy_wh) AS s FROM readings WHERE date = '2026-11-23'";
        let before = rows(&store, daily).await;
        let (plan, task) = stale(&store, daily).await;
        let late = series(
            "m-1",
            at("2026-11-23T11:00:00Z"),
            at("2026-11-23T23:45:00Z"),
            100.0,
        );
        write_raw(&store, &late, at("2026-11-24T00:00:00Z")).await;
        etl(&store, &config, at(NOW) + config.delete_grace).await;
        let after = rows(&store, daily).await;
        assert_ne!(before, after, "{name}: the late readings restate the date");
        // Reads are pinned to the listed version: the query fails as `Changed`, never reads
        // the listed size of the old version from the bytes of the new.
        let e = collect(plan, task)
            .await
            .expect_err("the partition was replaced");
        let e = meterstack_lake::query::engine_error(e);
        assert!(
            matches!(e, meterstack_lake::Error::Changed(_)),
            "{name}: {e:?}"
        );
    }
}
