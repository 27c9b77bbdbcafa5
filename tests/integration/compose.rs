//! Static checks of `docker-compose.yml` and `deploy/Dockerfile`: every `METERSTACK__`
//! variable is a real configuration key, every command parses, and the published ports are the
//! ones meterstack listens on. (The image itself is built and run in `container.rs`; the
//! compose file is not yet run for real: its public images cannot be pulled here.)

use crate::harness::bin;

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const DOCKERFILE: &str = include_str!("../../deploy/Dockerfile");

#[test]
fn compose_environment_is_valid_configuration() {
    let vars: Vec<(&str, &str)> = COMPOSE
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- METERSTACK__"))
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert!(!vars.is_empty());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = bin();
    cmd.arg("config").current_dir(dir.path());
    for (k, v) in &vars {
        cmd.env(format!("METERSTACK__{k}"), v);
    }
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("toml");
    assert_eq!(config["mqtt"]["listen"].as_str(), Some("0.0.0.0:1883"));
    assert_eq!(config["http"]["listen"].as_str(), Some("0.0.0.0:8080"));
    // The lake is in MinIO, in the bucket minio-init creates, with MinIO's credentials.
    let store = &config["lake"]["store"];
    assert_eq!(store["kind"].as_str(), Some("s3"));
    assert_eq!(store["bucket"].as_str(), Some("meterstack"));
    assert_eq!(store["endpoint"].as_str(), Some("http://minio:9000"));
    for needle in [
        "mc mb --ignore-existing lake/meterstack",
        "MINIO_ROOT_USER=meterstack",
        "MINIO_ROOT_PASSWORD=meterstack-lake",
        "SECRET_ACCESS_KEY=meterstack-lake",
        "condition: service_completed_successfully",
    ] {
        assert!(COMPOSE.contains(needle), "compose has {needle:?}");
    }
    assert!(vars.iter().all(|(k, _)| !k.is_empty()));
    for port in ["\"1883:1883\"", "\"8080:8080\""] {
        assert!(COMPOSE.contains(port), "compose publishes {port}");
    }
    assert!(DOCKERFILE.contains("EXPOSE 1883 8080"));
}

#[test]
fn compose_commands_parse() {
    // The commands of the services that run meterstack's image (a service's `image:` comes
    // before its `command:`).
    let mut image = "";
    let mut commands: Vec<Vec<String>> = Vec::new();
    for line in COMPOSE.lines().map(str::trim) {
        if let Some(i) = line.strip_prefix("image: ") {
            image = i;
        } else if let Some(c) = line.strip_prefix("command: ")
            && image == "meterstack:latest"
        {
            commands.push(serde_json::from_str(c).expect("commands are JSON arrays"));
        }
    }
    assert_eq!(commands.len(), 3, "broker, lake and simulator");
    for args in commands {
        let out = bin().args(&args).arg("--help").output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
