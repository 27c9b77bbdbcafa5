//! A Kafka consumer whose broker connections are reset in the middle of consumption skips
//! nothing: a TCP proxy in front of a Kafka-protocol broker of the test's own (tansu, which
//! advertises the proxy, so every connection goes through it) resets every connection ten
//! times while a group consumes; every record must arrive.
//!
//! Needs `METERSTACK_TEST_TANSU` (the tansu binary; `scripts/test` sets it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use meterstack_core::bus::kafka::{KafkaBus, KafkaConfig};
use meterstack_core::bus::{Bus, Record, Retention};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection on its port to `target`; [`reset`](Proxy::reset) ends every open
/// connection with a TCP reset.
struct Proxy {
    port: u16,
    resets: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (resets, _) = watch::channel(0u64);
        let tx = resets.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut reset = tx.subscribe();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = reset.changed() => {
                            // SO_LINGER 0: the close sends RST, as a dying middlebox does (a
                            // zero linger never blocks, which is what the deprecation is about).
                            #[allow(deprecated)]
                            let _ = (
                                client.set_linger(Some(Duration::ZERO)),
                                server.set_linger(Some(Duration::ZERO)),
                            );
                        }
                    }
                });
            }
        });
        Self { port, resets }
    }

    fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_skips_nothing_across_ten_connection_resets() {
    let tansu = std::env::var("METERSTACK_TEST_TANSU")
        .expect("METERSTACK_TEST_TANSU must name the tansu binary (scripts/test sets it)");
    let broker_port = free_port();
    let proxy = Proxy::start(broker_port).await;
    let mut broker = tokio::process::Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{broker_port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{}", proxy.port),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tansu");
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", broker_port)).await.is_ok() {
            break;
        }
        assert!(broker.try_wait().expect("tansu").is_none(), "tansu exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let config = KafkaConfig {
        brokers: format!("127.0.0.1:{}", proxy.port),
        timeout: Duration::from_secs(30),
        properties: [
            // tansu 0.6 returns nothing for a fetch that starts inside a record batch.
            ("batch.num.messages", "1"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1000"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "200"),
            // Small fetches, so that consumption spans the resets.
            ("fetch.max.bytes", "4096"),
            ("message.max.bytes", "4096"),
            ("max.partition.fetch.bytes", "1024"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..KafkaConfig::default()
    };
    let topic = "resets";
    let bus: Arc<dyn Bus> = Arc::new(
        KafkaBus::connect(config, &[topic], 4, &Retention::default())
            .await
            .expect("connect through the proxy"),
    );
    const N: u64 = 3_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let records = chunk
            .iter()
            .map(|i| Record {
                key: format!("meter-{}", i % 50),
                value: Bytes::from(i.to_string()),
                timestamp: Utc::now(),
                headers: Vec::new(),
            })
            .collect();
        bus.append(topic, records).await.expect("append");
    }

    let mut sub = bus
        .subscribe(topic, "resets.group")
        .await
        .expect("subscribe");
    let mut seen = BTreeSet::new();
    let (mut resets, mut errors) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while (seen.len() as u64) < N && tokio::time::Instant::now() < deadline {
        match sub.poll(40, Duration::from_millis(500)).await {
            Ok(batch) => {
                for d in batch {
                    let v: u64 = std::str::from_utf8(&d.record.value)
                        .expect("utf-8")
                        .parse()
                        .expect("a number");
                    seen.insert(v);
                }
                if sub.commit().await.is_err() {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
        if resets < 10 && seen.len() as u64 >= (resets + 1) * N / 11 {
            proxy.reset();
            resets += 1;
        }
    }
    let missing: Vec<u64> = (0..N).filter(|i| !seen.contains(i)).collect();
    assert_eq!(resets, 10, "every reset happened");
    assert!(
        missing.is_empty(),
        "{} of {N} records skipped across {resets} resets ({errors} errors seen): {:?}…",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{N} records, {resets} resets, {errors} poll/commit errors, 0 skipped");
    }
}
