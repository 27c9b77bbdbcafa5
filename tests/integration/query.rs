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

#[test]
fn an_api_only_process_serves_the_same_lake_beside_a_running_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Meterstack::start(dir.path(), &[]);
    let lines = crate::harness::reading_lines(10);
    assert!(crate::harness::mosquitto_pub_lines(
        up.mqtt_port,
        "meters/a-1/readings",
        "a-1",
        &lines
    ));
    assert_eq!(up.wait_for_count("raw_readings", 10), 10);
    // The api role needs no bus, so it does not contend for the embedded log `up` holds.
    let api = Meterstack::launch(dir.path(), &["run", "--roles", "api"], &[]);
    assert_eq!(api.mqtt_port, 0, "no broker in an api-only process");
    assert_eq!(api.count("raw_readings"), 10);
    assert_eq!(api.get("/readyz").0, 200);
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    let broker_only = Meterstack::launch(&broker_dir, &["run", "--roles", "broker"], &[]);
    let (status, body) = broker_only.query("SELECT 1");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "no query endpoint without the api role"
    );
}
