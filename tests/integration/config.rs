//! `meterstack config`: the effective configuration.

use crate::harness::bin;

#[test]
fn config_prints_defaults_with_env_and_flag_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .args([
            "config",
            "--http-port",
            "9090",
            "--data-dir",
            "/srv/meterstack",
        ])
        .current_dir(dir.path())
        .env("METERSTACK__INGEST__MAX_PAYLOAD_BYTES", "4096")
        .env("METERSTACK__LAKE__RAW_SINK__FLUSH_INTERVAL", "1s")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let config: toml::Value = toml::from_str(&text).expect("prints TOML");
    assert_eq!(config["data_dir"].as_str(), Some("/srv/meterstack"));
    assert_eq!(config["http"]["listen"].as_str(), Some("0.0.0.0:9090"));
    assert_eq!(config["mqtt"]["listen"].as_str(), Some("0.0.0.0:1883"));
    assert_eq!(
        config["ingest"]["max_payload_bytes"].as_integer(),
        Some(4096)
    );
    assert_eq!(
        config["lake"]["raw_sink"]["flush_interval"].as_str(),
        Some("1s")
    );
}

#[test]
fn config_file_is_read_and_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("meterstack.toml"),
        "[mqtt]\nlisten = \"127.0.0.1:1999\"\n",
    )
    .expect("write");
    let out = bin()
        .arg("config")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen = \"127.0.0.1:1999\""));

    std::fs::write(
        dir.path().join("meterstack.toml"),
        "[mqtt]\nlisten = \"nowhere\"\n",
    )
    .expect("write");
    let out = bin()
        .arg("config")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mqtt.listen") || err.contains("listen"),
        "{err}"
    );

    let out = bin()
        .arg("config")
        .current_dir(dir.path())
        .env("METERSTACK__LAKE__RAW_SINK__FLUSH_INTERVAL", "soon")
        .args(["--config", "/nonexistent.toml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// A broker log that cannot hold what the gate admits is refused at start, not run.
#[test]
fn a_broker_log_of_one_segment_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = bin()
        .args(["up", "--dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env("METERSTACK__MQTT__LISTEN", "127.0.0.1:0")
        .env("METERSTACK__HTTP__LISTEN", "127.0.0.1:0")
        .env("METERSTACK__MQTT__SEGMENTS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("meterstack up kept running with mqtt.segments = 1");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read");
    assert!(!status.success());
    assert!(err.contains("mqtt.segments at least 2"), "{err}");
}
