//! SQL over HTTP: what a client gets back for bad requests.

use crate::harness::Meterstack;

#[test]
fn bad_queries_get_a_status_and_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(
        dir.path(),
        &[
            ("METERSTACK__HTTP__QUERY__MAX_ROWS", "5"),
            ("METERSTACK__HTTP__MAX_BODY_BYTES", "4096"),
        ],
    );
    let cases = [
        (r#"{"sql":"SELEC 1"}"#, 400, "invalid_query"),
        (
            r#"{"sql":"SELECT nope FROM raw_readings"}"#,
            400,
            "invalid_query",
        ),
        (
            r#"{"sql":"SELECT * FROM no_such_table"}"#,
            400,
            "invalid_query",
        ),
        (r#"{"sql":"DROP TABLE raw_readings"}"#, 400, "invalid_query"),
        (
            r#"{"sql":"CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'"}"#,
            400,
            "invalid_query",
        ),
        (
            r#"{"sql":"COPY raw_readings TO '/tmp/x.parquet'"}"#,
            400,
            "invalid_query",
        ),
        (r#"{"sql":""}"#, 400, "invalid_query"),
        (
            r#"{"sql":"SELECT * FROM generate_series(1, 10)"}"#,
            400,
            "result_too_large",
        ),
        (r#"{"query":"SELECT 1"}"#, 400, "invalid_request"),
        ("not json", 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got_status, got) = ms.post_query(body);
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {got}"
        );
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{got}"
        );
    }
    let big = format!(r#"{{"sql":"SELECT '{}'"}}"#, "x".repeat(8192));
    let (status, got) = ms.post_query(&big);
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // Within the limit, a query answers rows; an empty table answers [].
    let (status, got) = ms.query("SELECT 1 AS one");
    assert_eq!((status, got), (200, serde_json::json!([{"one": 1}])));
    let (status, got) = ms.query("SELECT * FROM raw_readings");
    assert_eq!((status, got), (200, serde_json::json!([])));
    assert!(ms.metric("meterstack_queries_total{outcome=\"invalid\"}") >= 11.0);
}
