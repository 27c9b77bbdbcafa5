use std::sync::Arc;

use arrow::array::{BinaryArray, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::*;

#[test]
fn rows_become_objects_with_explicit_nulls_and_rfc3339_times() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("meter_id", DataType::Utf8, false),
        Field::new("ts", meterstack_core::reading::timestamp_type(), false),
        Field::new("power_w", DataType::Float64, true),
        Field::new("payload", DataType::Binary, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["m-1"])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_795_428_900_000_000]).with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![None])),
            Arc::new(BinaryArray::from(vec![b"ab".as_ref()])),
        ],
    )
    .expect("batch");
    let json: serde_json::Value =
        serde_json::from_slice(&to_json(&[batch]).expect("json")).expect("valid json");
    assert_eq!(
        json,
        serde_json::json!([{"meter_id": "m-1", "ts": "2026-11-23T10:15:00Z", "power_w": null, "payload": "6162"}])
    );
}

#[test]
fn no_rows_is_an_empty_array() {
    assert_eq!(to_json(&[]).expect("json"), b"[]");
}
