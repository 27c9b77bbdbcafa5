//! Cross-checks the DSMR P1 parser (`meterstack_core::wire::dsmr`) against PyPI's dsmr-parser.
//!
//! `scripts/dsmr-crosscheck.py` parses every fixture in `tests/data/dsmr` with dsmr-parser and
//! derives the same fields from its objects; both parsers must agree on every fixture, accepted
//! or rejected. Needs `python3` with dsmr-parser (`python3 -m pip install dsmr-parser`); without
//! them the test fails and says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use meterstack_core::wire::dsmr::{self, DsmrError, Telegram};
use serde_json::{Map, Value};

const TOLERANCE: f64 = 1e-6;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dsmr")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dsmr-crosscheck.py")
}

/// The fixture files, sorted by name.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures_dir())
        .expect("tests/data/dsmr is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).expect("fixture is readable");
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected at least 8 DSMR fixtures in {}, found {}",
        fixtures_dir().display(),
        files.len()
    );
    files
}

/// Runs the cross-check script; panics with instructions when python3 or dsmr-parser is missing.
fn dsmr_parser_results() -> Map<String, Value> {
    let script = script();
    let output = Command::new("python3")
        .arg(&script)
        .arg(fixtures_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}); the DSMR cross-check needs python3 with PyPI's \
                 dsmr-parser: python3 -m pip install dsmr-parser"
            )
        });
    assert!(
        output.status.success(),
        "{} failed ({}); it needs python3 with PyPI's dsmr-parser \
         (python3 -m pip install dsmr-parser). stderr:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout) {
        Ok(Value::Object(map)) => map,
        other => panic!(
            "{} did not print a JSON object ({other:?}):\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        ),
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= TOLERANCE * a.abs().max(b.abs())
}

fn json_f64(theirs: &Value, key: &str) -> Result<Option<f64>, String> {
    match theirs.get(key) {
        Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{key}: not a number in the script's output: {v}")),
        None => Err(format!("{key}: missing from the script's output")),
    }
}

fn json_time(theirs: &Value, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match theirs.get(key) {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| format!("{key}: bad RFC 3339 time {s:?} in the script's output: {e}")),
        other => Err(format!(
            "{key}: unexpected {other:?} in the script's output"
        )),
    }
}

fn same<T: PartialEq + Debug>(problems: &mut Vec<String>, field: &str, ours: T, theirs: T) {
    if ours != theirs {
        problems.push(format!("{field}: ours {ours:?}, dsmr-parser {theirs:?}"));
    }
}

fn same_f64(problems: &mut Vec<String>, field: &str, ours: Option<f64>, theirs: Option<f64>) {
    let agree = match (ours, theirs) {
        (Some(a), Some(b)) => close(a, b),
        (None, None) => true,
        _ => false,
    };
    if !agree {
        problems.push(format!("{field}: ours {ours:?}, dsmr-parser {theirs:?}"));
    }
}

/// How the fields of an accepted telegram differ; Err if the script's output is malformed.
fn compare_fields(t: &Telegram, theirs: &Value) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let numbers = [
        ("import_wh", Some(t.import_wh)),
        ("export_wh", t.export_wh),
        ("power_w", t.power_w),
        ("voltage_v", t.voltage_v),
        ("current_a", t.current_a),
        ("gas_m3", t.gas.map(|g| g.1)),
    ];
    for (field, ours) in numbers {
        same_f64(&mut problems, field, ours, json_f64(theirs, field)?);
    }
    let times = [
        ("timestamp", t.timestamp),
        ("gas_ts", t.gas.and_then(|g| g.0)),
    ];
    for (field, ours) in times {
        same(&mut problems, field, ours, json_time(theirs, field)?);
    }
    Ok(problems)
}

/// How our result and dsmr-parser's differ; empty when they agree.
fn differences(name: &str, ours: &Result<Telegram, DsmrError>, theirs: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(ok) = theirs.get("ok").and_then(Value::as_bool) else {
        return vec![format!("no \"ok\" in the script's output: {theirs}")];
    };
    if name.contains("bad-crc") {
        if !matches!(ours, Err(e) if e.is_crc()) {
            problems.push(format!(
                "a bad-crc fixture must fail the CRC check; ours: {ours:?}"
            ));
        }
        if theirs.get("crc") != Some(&Value::Bool(true)) {
            problems.push(format!("dsmr-parser did not report a CRC error: {theirs}"));
        }
    }
    match (ours, ok) {
        (Ok(t), true) => match compare_fields(t, theirs) {
            Ok(mut found) => problems.append(&mut found),
            Err(e) => problems.push(e),
        },
        (Err(e), false) => {
            let their_crc = theirs.get("crc").and_then(Value::as_bool);
            same(
                &mut problems,
                "rejected as CRC error",
                Some(e.is_crc()),
                their_crc,
            );
        }
        (Ok(t), false) => problems.push(format!(
            "we accept ({t:?}), dsmr-parser rejects: {}",
            theirs.get("error").unwrap_or(&Value::Null)
        )),
        (Err(e), true) => problems.push(format!("we reject ({e}), dsmr-parser accepts: {theirs}")),
    }
    problems
}

#[test]
fn parser_agrees_with_dsmr_parser() {
    let fixtures = fixtures();
    let theirs = dsmr_parser_results();

    let names: Vec<&str> = fixtures.iter().map(|(n, _)| n.as_str()).collect();
    let their_names: Vec<&str> = theirs.keys().map(String::as_str).collect();
    assert_eq!(
        names, their_names,
        "the script's output must cover exactly the fixture files"
    );

    let mut report = Vec::new();
    let mut accepted = 0;
    for (name, bytes) in &fixtures {
        let ours = dsmr::parse(bytes);
        accepted += usize::from(ours.is_ok());
        let problems = differences(name, &ours, &theirs[name]);
        if !problems.is_empty() {
            report.push(format!("{name}:\n  {}", problems.join("\n  ")));
        }
    }
    assert!(
        report.is_empty(),
        "meterstack's DSMR parser and dsmr-parser disagree:\n{}",
        report.join("\n")
    );
    assert!(accepted >= 6, "only {accepted} fixtures parse");
}

/// Fixture hygiene that needs no Python: CRLF line ends as meters send them, bad-CRC fixtures
/// fail on the CRC, and the same telegram with LF line ends parses the same when it has no CRC.
#[test]
fn fixtures_are_meter_shaped() {
    let fixtures = fixtures();
    assert!(
        fixtures
            .iter()
            .filter(|(n, _)| n.contains("bad-crc"))
            .count()
            >= 2,
        "expected at least two *bad-crc* fixtures"
    );
    for (name, bytes) in &fixtures {
        let lone_lf = bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
        assert!(!lone_lf, "{name}: every line must end in CRLF");
        let parsed = dsmr::parse(bytes);
        if name.contains("bad-crc") {
            assert!(
                matches!(&parsed, Err(e) if e.is_crc()),
                "{name}: {parsed:?}"
            );
        }
        if name.starts_with("v2_2-") || name.starts_with("v3-") {
            let lf = String::from_utf8(bytes.clone())
                .unwrap()
                .replace("\r\n", "\n");
            assert_eq!(
                dsmr::parse(lf.as_bytes()),
                parsed,
                "{name} with LF line ends"
            );
        }
    }
}
