//! The pure part of a restatement: raw rows deduplicated and replayed through the pipeline's
//! processor, the outputs routed to their date, and the trusted zone's batches of a date.

use super::*;

/// One date's trusted output, keyed (meter, start µs) so rows come out sorted.
#[derive(Debug, Default)]
pub(super) struct DayOut {
    pub(super) windows: [BTreeMap<(String, i64), MeterWindow>; 3],
    pub(super) clean: HashMap<(String, i64), CleanReading>,
}

pub(super) fn day_start(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

/// Replays deduplicated rows through `processor` in time order and closes it.
pub(super) fn replay(mut processor: Processor, rows: Vec<RawRow>) -> (Outputs, u64) {
    // The replay is not the live pipeline: keep it out of the pipeline's metrics.
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let (rows, duplicates) = dedup(rows);
        let mut out = Outputs::default();
        for (reading, received) in rows {
            let received = DateTime::from_timestamp_micros(received).unwrap_or_default();
            processor.replay(reading, received, &mut out);
        }
        processor.close(&mut out);
        (out, duplicates)
    })
}

/// Time order for the replay, and one reading per (meter, timestamp): the first received
/// wins (ties: the smaller register, so the result never depends on file order).
pub(super) fn dedup(mut rows: Vec<RawRow>) -> (Vec<RawRow>, u64) {
    rows.sort_by(|(a, ra), (b, rb)| {
        (a.ts, a.meter_id.as_str(), ra)
            .cmp(&(b.ts, b.meter_id.as_str(), rb))
            .then(a.import_wh.total_cmp(&b.import_wh))
    });
    let before = rows.len();
    rows.dedup_by(|(later, _), (kept, _)| later.ts == kept.ts && later.meter_id == kept.meter_id);
    let duplicates = (before - rows.len()) as u64;
    (rows, duplicates)
}

/// Drops exact redeliveries (same meter, time, receive time and registers) from raw rows.
pub(super) fn drop_redeliveries(mut rows: Vec<RawRow>) -> Vec<RawRow> {
    rows.sort_by(|(a, ra), (b, rb)| {
        (a.meter_id.as_str(), a.ts, ra)
            .cmp(&(b.meter_id.as_str(), b.ts, rb))
            .then(a.import_wh.total_cmp(&b.import_wh))
    });
    rows.dedup_by(|(a, ra), (b, rb)| a == b && ra == rb);
    rows
}

/// The outputs of a replay that belong to `date` (windows by their start; readings with
/// the interval they close). Later revisions replace earlier ones.
pub(super) fn route(out: Outputs, dt: i64, date: NaiveDate) -> DayOut {
    let (from, to) = (day_start(date), day_start(date) + DAY_US);
    let mut day = DayOut::default();
    for a in out.aggregates {
        let Aggregate::MeterWindow(w) = a else {
            continue;
        };
        let start = w.start.timestamp_micros();
        if !(from..to).contains(&start) {
            continue;
        }
        let i = match w.window {
            Width::Interval => 0,
            Width::Hour => 1,
            Width::Day => 2,
        };
        day.windows[i].insert((w.meter_id.clone(), start), w);
    }
    for c in out.clean {
        let end = c.ts.timestamp_micros();
        if (from..to).contains(&(end - dt)) {
            day.clean.insert((c.meter_id.clone(), end), c);
        }
    }
    day
}

/// Raw readings rows of a `raw_readings` batch.
pub(super) fn raw_rows(batch: &RecordBatch) -> Result<Vec<RawRow>> {
    use meterstack_core::reading::columns as c;
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::State(format!("raw file without column {name}")))
    };
    fn cast<'a, T: 'static>(a: &'a ArrayRef, name: &str) -> Result<&'a T> {
        a.as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| Error::State(format!("raw column {name} has the wrong type")))
    }
    let (ids, ts, import) = (col(c::METER_ID)?, col(c::TS)?, col(c::IMPORT_WH)?);
    let ids = cast::<StringArray>(ids, c::METER_ID)?;
    let ts = cast::<TimestampMicrosecondArray>(ts, c::TS)?;
    let import = cast::<Float64Array>(import, c::IMPORT_WH)?;
    let (export, power, voltage, current, seq, received) = (
        col(c::EXPORT_WH)?,
        col(c::POWER_W)?,
        col(c::VOLTAGE_V)?,
        col(c::CURRENT_A)?,
        col(c::SEQ)?,
        col(crate::paths::RECEIVED_AT)?,
    );
    let export = cast::<Float64Array>(export, c::EXPORT_WH)?;
    let power = cast::<Float64Array>(power, c::POWER_W)?;
    let voltage = cast::<Float64Array>(voltage, c::VOLTAGE_V)?;
    let current = cast::<Float64Array>(current, c::CURRENT_A)?;
    let seq = cast::<UInt64Array>(seq, c::SEQ)?;
    let received = cast::<TimestampMicrosecondArray>(received, crate::paths::RECEIVED_AT)?;
    let opt = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let Ok(meter_id) = MeterId::new(ids.value(i)) else {
            continue;
        };
        rows.push((
            Reading {
                meter_id,
                ts: DateTime::from_timestamp_micros(ts.value(i)).unwrap_or_default(),
                import_wh: import.value(i),
                export_wh: opt(export, i),
                power_w: opt(power, i),
                voltage_v: opt(voltage, i),
                current_a: opt(current, i),
                seq: seq.is_valid(i).then(|| seq.value(i)),
            },
            received.value(i),
        ));
    }
    Ok(rows)
}

/// The three trusted batches of one date.
pub(super) fn trusted_batches(day: &DayOut, dt: i64) -> Result<[(Table, RecordBatch); 3]> {
    let ts_array = |v: Vec<i64>| TimestampMicrosecondArray::from(v).with_timezone("UTC");
    // readings: one row per interval, with the reading that closed it.
    let intervals = &day.windows[0];
    let mut cols: (Vec<&str>, Vec<i64>, Vec<f64>, Vec<f64>) = Default::default();
    let mut register = Vec::new();
    let mut power = Vec::new();
    let mut voltage = Vec::new();
    let mut quality = Vec::new();
    let mut rule: Vec<Option<&str>> = Vec::new();
    let mut received = Vec::new();
    for ((meter, start), w) in intervals {
        let measured = w.measured_intervals > 0;
        let clean = measured
            .then(|| day.clean.get(&(meter.clone(), start + dt)))
            .flatten();
        cols.0.push(meter);
        cols.1.push(*start);
        cols.2.push(w.energy_wh);
        cols.3.push(w.export_wh);
        register.push(clean.map(|c| c.import_wh));
        power.push(clean.and_then(|c| c.power_w));
        voltage.push(clean.and_then(|c| c.voltage_v));
        match clean {
            Some(c) => {
                quality.push(c.quality.name());
                rule.push(c.rule.map(|r| r.name()));
                received.push(Some(c.received_at.timestamp_micros()));
            }
            None => {
                quality.push(if measured { "measured" } else { "estimated" });
                rule.push(w.rules.first().map(|r| r.name()));
                received.push(None);
            }
        }
    }
    let readings = RecordBatch::try_new(
        Table::Readings.schema(),
        vec![
            Arc::new(StringArray::from(cols.0)),
            Arc::new(ts_array(cols.1)),
            Arc::new(Float64Array::from(cols.2)),
            Arc::new(Float64Array::from(cols.3)),
            Arc::new(Float64Array::from(register)),
            Arc::new(Float64Array::from(power)),
            Arc::new(Float64Array::from(voltage)),
            Arc::new(StringArray::from(quality)),
            Arc::new(StringArray::from(rule)),
            Arc::new(TimestampMicrosecondArray::from(received).with_timezone("UTC")),
        ],
    )?;
    let window_batch = |table: Table, windows: &BTreeMap<(String, i64), MeterWindow>| {
        let ws: Vec<&MeterWindow> = windows.values().collect();
        let f = |get: fn(&MeterWindow) -> f64| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<Float64Array>())
        };
        let o = |get: fn(&MeterWindow) -> Option<f64>| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<Float64Array>())
        };
        let u = |get: fn(&MeterWindow) -> u32| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<UInt32Array>())
        };
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(
                    ws.iter()
                        .map(|w| Some(w.meter_id.as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(ts_array(
                    ws.iter().map(|w| w.start.timestamp_micros()).collect(),
                )),
                f(|w| w.energy_wh),
                f(|w| w.export_wh),
                o(|w| w.peak_demand_w),
                o(|w| w.max_power_w),
                o(|w| w.min_voltage_v),
                o(|w| w.max_voltage_v),
                u(|w| w.expected_intervals),
                u(|w| w.measured_intervals),
                u(|w| w.estimated_intervals),
            ],
        )
    };
    Ok([
        (Table::Readings, readings),
        (
            Table::ReadingsHourly,
            window_batch(Table::ReadingsHourly, &day.windows[1])?,
        ),
        (
            Table::ReadingsDaily,
            window_batch(Table::ReadingsDaily, &day.windows[2])?,
        ),
    ])
}
