//! SIGTERM during a steady stream loses no reading the broker acknowledged: not before the
//! signal, and not during the shutdown either (the gate closes meter connections before the
//! bridge's last read).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use crate::harness::{Meterstack, mosquitto_pub};

#[test]
fn sigterm_during_a_stream_loses_no_acknowledged_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long flush interval: whatever is acknowledged must be written by the shutdown itself.
    let ms = Meterstack::start(
        dir.path(),
        &[("METERSTACK__LAKE__RAW_SINK__FLUSH_INTERVAL", "1h")],
    );
    let port = ms.mqtt_port;
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..3u64)
        .map(|m| {
            let sigterm_sent = sigterm_sent.clone();
            std::thread::spawn(move || {
                // (seq, acknowledged, finished before SIGTERM was sent)
                let mut results = Vec::new();
                for seq in 0..10_000u64 {
                    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
                    let body = format!(r#"{{"ts":"{ts}","import_wh":{seq},"seq":{seq}}}"#);
                    let acked = mosquitto_pub(port, &format!("meters/s-{m}/readings"), &body);
                    let before = !sigterm_sent.load(Ordering::SeqCst);
                    results.push((seq, acked, before));
                    if !acked {
                        break;
                    }
                }
                results
            })
        })
        .collect();
    // Let the stream run until readings are flowing, then stop the process mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ms.metric("meterstack_messages_received_total") < 300.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm_sent.store(true, Ordering::SeqCst);
    let status = ms.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let results: Vec<Vec<(u64, bool, bool)>> = publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .collect();

    let ms = Meterstack::start(dir.path(), &[]);
    let mut acked_before = 0;
    let mut acked_after = 0;
    let mut lost_after = 0;
    for (m, results) in results.iter().enumerate() {
        let stored: BTreeSet<u64> = ms
            .rows(&format!(
                "SELECT seq FROM raw_readings WHERE meter_id = 's-{m}'"
            ))
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        for &(seq, acked, before) in results {
            match (acked, before) {
                (true, true) => {
                    acked_before += 1;
                    assert!(
                        stored.contains(&seq),
                        "meter s-{m} seq {seq} was acknowledged before SIGTERM but lost"
                    );
                }
                (true, false) => {
                    acked_after += 1;
                    lost_after += usize::from(!stored.contains(&seq));
                }
                _ => {}
            }
        }
    }
    assert!(
        acked_before >= 300,
        "the stream ran before SIGTERM ({acked_before} acknowledged)"
    );
    eprintln!("acknowledged before SIGTERM: {acked_before}; during shutdown: {acked_after}");
    assert_eq!(
        lost_after, 0,
        "of {acked_after} readings acknowledged during shutdown, {lost_after} were lost"
    );
}
