use proptest::prelude::*;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .expect("valid test timestamp")
}

fn decode(payload: &str) -> Decoded {
    Decoder::new(DecodeConfig::default()).decode(
        "meters/m-001/readings",
        payload.as_bytes(),
        at("2026-11-23T10:16:00Z"),
    )
}

fn reasons(d: &Decoded) -> Vec<&'static str> {
    d.rejections.iter().map(|r| r.reason.code()).collect()
}

#[test]
fn decodes_the_documented_example() {
    let d = decode(
        r#"{"ts":"2026-11-23T10:15:00Z","import_wh":1234567,"export_wh":0,"power_w":412.5,"voltage_v":229.8,"current_a":1.8}"#,
    );
    assert!(d.rejections.is_empty(), "{d:?}");
    assert_eq!(
        d.readings,
        vec![Reading {
            meter_id: MeterId::new("m-001").expect("id"),
            ts: at("2026-11-23T10:15:00Z"),
            import_wh: 1_234_567.0,
            export_wh: Some(0.0),
            power_w: Some(412.5),
            voltage_v: Some(229.8),
            current_a: Some(1.8),
            seq: None,
        }]
    );
}

#[test]
fn epoch_millis_and_offsets_are_utc() {
    let d = decode(
        r#"[{"ts":1795428900000,"import_wh":1},{"ts":"2026-11-23T11:15:00+01:00","import_wh":2,"seq":9,"meter_id":"m-001"}]"#,
    );
    assert!(d.rejections.is_empty(), "{d:?}");
    assert_eq!(d.readings[0].ts, at("2026-11-23T10:15:00Z"));
    assert_eq!(d.readings[1].ts, at("2026-11-23T10:15:00Z"));
    assert_eq!(d.readings[1].seq, Some(9));
}

#[test]
fn each_malformation_has_its_reason() {
    let cases = [
        ("not json", "not_json"),
        ("42", "bad_shape"),
        ("[]", "empty_batch"),
        (r#"{"import_wh":1}"#, "missing_field"),
        (r#"{"ts":"2026-11-23T10:15:00Z"}"#, "missing_field"),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":"12"}"#,
            "invalid_field",
        ),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":-1}"#,
            "invalid_field",
        ),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":1,"seq":-3}"#,
            "invalid_field",
        ),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":1,"voltage_v":true}"#,
            "invalid_field",
        ),
        (r#"{"ts":"yesterday","import_wh":1}"#, "bad_timestamp"),
        (r#"{"ts":1.5,"import_wh":1}"#, "bad_timestamp"),
        (r#"{"ts":true,"import_wh":1}"#, "bad_timestamp"),
        (
            r#"{"ts":"3000-01-01T00:00:00Z","import_wh":1}"#,
            "timestamp_in_future",
        ),
        (r#"{"ts":0,"import_wh":1}"#, "timestamp_too_old"),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":1,"meter_id":"m-002"}"#,
            "meter_id_mismatch",
        ),
        (
            r#"{"ts":"2026-11-23T10:15:00Z","import_wh":1,"meter_id":7}"#,
            "invalid_field",
        ),
    ];
    for (payload, reason) in cases {
        let d = decode(payload);
        assert!(d.readings.is_empty(), "{payload}: {d:?}");
        assert_eq!(reasons(&d), vec![reason], "{payload}");
        assert!(!d.rejections[0].detail.is_empty());
    }
}

#[test]
fn one_bad_element_does_not_reject_its_neighbours() {
    let d = decode(
        r#"[{"ts":"2026-11-23T10:00:00Z","import_wh":1},{"ts":"2026-11-23T10:05:00Z"},[1],{"ts":"2026-11-23T10:10:00Z","import_wh":3}]"#,
    );
    assert_eq!(d.readings.len(), 2);
    assert_eq!(reasons(&d), vec!["missing_field", "bad_shape"]);
    assert_eq!(d.rejections[0].index, Some(1));
    assert_eq!(d.rejections[1].index, Some(2));
}

#[test]
fn limits_apply_to_whole_messages() {
    let decoder = Decoder::new(DecodeConfig {
        max_payload_bytes: 100,
        max_readings_per_message: 2,
        ..DecodeConfig::default()
    });
    let now = at("2026-11-23T10:16:00Z");
    let big = vec![b' '; 101];
    let d = decoder.decode("meters/m-1/readings", &big, now);
    assert_eq!(reasons(&d), vec!["payload_too_large"]);
    let three = br#"[{"ts":0,"import_wh":1},{"ts":0,"import_wh":1},{"ts":0,"import_wh":1}]"#;
    let d = decoder.decode("meters/m-1/readings", three, now);
    assert_eq!(reasons(&d), vec!["too_many_readings"]);
}

#[test]
fn topics_are_checked() {
    let now = at("2026-11-23T10:16:00Z");
    let decoder = Decoder::new(DecodeConfig::default());
    for topic in [
        "meters/m-1",
        "meters/m 1/readings",
        "devices/m-1/readings",
        "meters//readings",
        "meters/a/readings/x",
    ] {
        let d = decoder.decode(topic, b"{}", now);
        assert_eq!(reasons(&d), vec!["bad_topic"], "{topic}");
        assert_eq!(d.meter_id, None);
    }
    // A valid meter with a format meterstack does not decode.
    let d = decoder.decode("meters/m-1/xml", b"<r/>", now);
    assert_eq!(reasons(&d), vec!["unknown_format"]);
    assert_eq!(d.meter_id.map(|m| m.to_string()), Some("m-1".to_owned()));
    // A DSMR topic takes telegrams, not JSON.
    let d = decoder.decode("meters/m-1/dsmr", br#"{"ts":0,"import_wh":1}"#, now);
    assert_eq!(reasons(&d), vec!["bad_telegram"]);
}

fn arb_reading() -> impl Strategy<Value = Reading> {
    (
        "[A-Za-z0-9._-]{1,64}",
        // Microsecond timestamps within ten years before the receive time.
        0i64..(3000 * 86_400 * 1_000_000i64),
        0.0f64..1e12,
        proptest::option::of(0.0f64..1e12),
        proptest::option::of(-1e6f64..1e6),
        proptest::option::of(0.0f64..500.0),
        proptest::option::of(-1e3f64..1e3),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(id, back_us, import_wh, export_wh, power_w, voltage_v, current_a, seq)| Reading {
                meter_id: MeterId::new(&id).expect("strategy yields valid ids"),
                ts: DateTime::from_timestamp_micros(
                    at("2026-11-23T10:16:00Z").timestamp_micros() - back_us,
                )
                .expect("in range"),
                import_wh,
                export_wh,
                power_w,
                voltage_v,
                current_a,
                seq,
            },
        )
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(readings in proptest::collection::vec(arb_reading(), 1..5)) {
        // One topic per batch: give every reading the first one's meter id.
        let id = readings[0].meter_id.clone();
        let readings: Vec<Reading> = readings.into_iter().map(|r| Reading { meter_id: id.clone(), ..r }).collect();
        let d = Decoder::new(DecodeConfig::default())
            .decode(&readings_topic(&id), &encode(&readings), at("2026-11-23T10:16:00Z"));
        prop_assert_eq!(d.rejections, vec![]);
        prop_assert_eq!(d.readings, readings);
    }

    #[test]
    fn arbitrary_bytes_never_panic(topic in ".{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = Decoder::new(DecodeConfig::default()).decode(&topic, &payload, at("2026-11-23T10:16:00Z"));
        prop_assert!(d.readings.is_empty() || d.meter_id.is_some());
    }

    #[test]
    fn arbitrary_json_never_panics(json in arb_json()) {
        let payload = serde_json::to_vec(&json).expect("serializable");
        let d = decode(std::str::from_utf8(&payload).expect("utf8"));
        // Every element is accounted for: accepted or rejected.
        let n = match &json { Value::Array(items) if !items.is_empty() => items.len(), _ => 1 };
        prop_assert_eq!(d.readings.len() + d.rejections.len(), n);
    }

    #[test]
    fn encoded_readings_decode_to_themselves(reading in arb_reading(), rfc3339 in any::<bool>()) {
        let ts = if rfc3339 {
            Value::String(reading.ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        } else {
            // Epoch milliseconds carry no microseconds.
            Value::from(reading.ts.timestamp_millis())
        };
        let mut expected = reading.clone();
        if !rfc3339 {
            expected.ts = DateTime::from_timestamp_millis(reading.ts.timestamp_millis()).expect("in range");
        }
        let mut obj = serde_json::json!({
            "ts": ts, "import_wh": reading.import_wh, "export_wh": reading.export_wh,
            "power_w": reading.power_w, "voltage_v": reading.voltage_v,
            "current_a": reading.current_a, "seq": reading.seq, "meter_id": reading.meter_id.as_str(),
        });
        obj["firmware"] = Value::from("ignored");
        let topic = readings_topic(&reading.meter_id);
        let d = Decoder::new(DecodeConfig::default()).decode(
            &topic, &serde_json::to_vec(&obj).expect("json"), at("2026-11-23T10:16:00Z"));
        prop_assert_eq!(d.rejections, vec![]);
        prop_assert_eq!(d.readings, vec![expected]);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        "[a-z0-9:TZ.-]{0,30}".prop_map(Value::from),
    ];
    let field = prop_oneof![
        Just("ts".to_owned()),
        Just("import_wh".to_owned()),
        Just("export_wh".to_owned()),
        Just("voltage_v".to_owned()),
        Just("seq".to_owned()),
        Just("meter_id".to_owned()),
        "[a-z_]{1,10}",
    ];
    leaf.prop_recursive(3, 32, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(field.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
