//! The store's behaviour, run on SQLite and on PostgreSQL (`METERSTACK_TEST_POSTGRES`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use chrono::{NaiveDate, TimeDelta, Utc};
use sqlx::Connection;

use super::keys::Role;
use super::meters::{MeterClass, MeterFields, MeterFilter, MeterStatus};
use super::secret::{generate_meter_secret, hash_meter_secret, verify_meter_secret};
use super::{SqlStore, StoreConfig, StoreError};
use crate::reading::MeterId;

async fn sqlite(dir: &Path) -> SqlStore {
    StoreConfig::default()
        .build(dir)
        .await
        .expect("open SQLite")
}

/// A fresh database on the PostgreSQL server `METERSTACK_TEST_POSTGRES` names
/// (`postgres://user:password@host:port/db`; scripts/test starts one).
async fn postgres(_dir: &Path) -> SqlStore {
    let admin_url = std::env::var("METERSTACK_TEST_POSTGRES").expect(
        "METERSTACK_TEST_POSTGRES=postgres://… must name a PostgreSQL server (scripts/test starts one)",
    );
    sqlx::any::install_default_drivers();
    let name = format!("meterstack_test_{}", super::secret::random_hex(6));
    let mut admin = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&admin_url);
    StoreConfig {
        url: format!("{base}/{name}"),
        ..StoreConfig::default()
    }
    .build(Path::new("."))
    .await
    .expect("open PostgreSQL")
}

fn id(s: &str) -> MeterId {
    MeterId::new(s).unwrap()
}

macro_rules! suite {
    ($name:ident, $open:ident) => {
        mod $name {
            use super::*;

            async fn open() -> (tempfile::TempDir, SqlStore) {
                let dir = tempfile::tempdir().unwrap();
                let store = $open(dir.path()).await;
                (dir, store)
            }

            #[tokio::test]
            async fn tariff_versions_hand_over_never_overlap_and_bills_keep_their_revisions() {
                use super::super::bills::StoredBill;
                use super::super::tariffs::NewTariffVersion;
                let (_dir, store) = open().await;
                let d = |s: &str| s.parse::<NaiveDate>().unwrap();
                let version = |from: &str, to: Option<&str>, doc: &str| NewTariffVersion {
                    tariff_id: "T".into(),
                    effective_from: d(from),
                    effective_to: to.map(d),
                    name: "tou".into(),
                    currency: "USD".into(),
                    document: doc.into(),
                };
                let v1 = store.add_tariff_version(&version("2025-01-01", None, "{\"a\":1}")).await.unwrap();
                assert_eq!(v1.version, 1);
                // The same import again: nothing new.
                assert_eq!(store.add_tariff_version(&version("2025-01-01", None, "{\"a\":1}")).await.unwrap().version, 1);
                // A later open version closes the first the day before.
                assert_eq!(store.add_tariff_version(&version("2026-03-01", None, "{\"a\":2}")).await.unwrap().version, 2);
                let all = store.tariff_versions(Some("T")).await.unwrap();
                assert_eq!(all[0].effective_to, Some(d("2026-02-28")));
                assert_eq!(store.tariff_on("T", d("2026-02-28")).await.unwrap().version, 1);
                assert_eq!(store.tariff_on("T", d("2026-03-01")).await.unwrap().version, 2);
                // Overlaps are refused by name; so is a bounded version inside the open one.
                for (from, to) in [("2025-06-01", None), ("2026-05-01", Some("2026-06-30")), ("2024-06-01", Some("2025-01-01"))] {
                    let e = store.add_tariff_version(&version(from, to, "{\"a\":3}")).await.unwrap_err();
                    assert!(matches!(&e, StoreError::Invalid(m) if m.contains("overlaps version")), "{e}");
                }
                assert!(matches!(store.tariff_on("T", d("2024-12-31")).await, Err(StoreError::NotFound(_))));
                assert_eq!(store.tariff_versions(None).await.unwrap().len(), 2);

                let bill = |meter: &str, revision: i64, total: f64| StoredBill {
                    meter_id: meter.into(),
                    period: "2026-03".into(),
                    revision,
                    tariff_id: "T".into(),
                    tariff_version: 2,
                    from: d("2026-03-01"),
                    to: d("2026-03-31"),
                    currency: "USD".into(),
                    total,
                    estimated_share: 0.25,
                    lines: "[]".into(),
                    carry: "{}".into(),
                    created_at: Utc::now(),
                };
                // More bills than one INSERT statement holds.
                let first: Vec<StoredBill> = (0..100).map(|m| bill(&format!("m{m:03}"), 1, 10.5 + m as f64)).collect();
                assert_eq!(store.add_bills(&first).await.unwrap(), 100);
                store.add_bills(&[bill("m007", 2, 99.25)]).await.unwrap();
                // A revision that another run already stored: a conflict, nothing written.
                let e = store.add_bills(&[bill("m008", 2, 1.0), bill("m007", 2, 1.0)]).await.unwrap_err();
                assert!(matches!(e, StoreError::Conflict(_)), "{e}");
                let latest = store.latest_bills("2026-03").await.unwrap();
                assert_eq!(latest.len(), 100);
                assert_eq!((latest["m007"].revision, latest["m007"].total), (2, 99.25));
                assert_eq!(latest["m008"].revision, 1);
                assert_eq!(latest["m001"].estimated_share, 0.25);
                assert_eq!(store.bills(Some("m007")).await.unwrap().len(), 2);
                assert!(store.latest_bills("2026-02").await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn forecasts_upsert_idempotently_and_newer_hours_replace_older() {
                use super::super::forecasts::{ForecastHour, NewForecast, Subject};
                let (_dir, store) = open().await;
                let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").unwrap().with_timezone(&Utc);
                let hours = |n: i64, base: f64| -> Vec<ForecastHour> {
                    (0..n)
                        .map(|h| ForecastHour {
                            ts: t0 + TimeDelta::hours(h),
                            p10: base,
                            p50: base + 1.0,
                            p90: base + 2.0,
                        })
                        .collect()
                };
                // More meters than one INSERT statement holds.
                let mut batch: Vec<NewForecast> = (0..30)
                    .map(|m| NewForecast { subject: Subject::Meter(format!("m{m:02}")), meters: 1, hours: hours(48, 10.0) })
                    .collect();
                batch.push(NewForecast { subject: Subject::Feeder("f-01".into()), meters: 30, hours: hours(48, 300.0) });
                batch.push(NewForecast { subject: Subject::Fleet, meters: 30, hours: hours(48, 300.0) });
                let made = t0 - TimeDelta::hours(1);
                assert_eq!(store.upsert_forecasts(&batch, "v1", made).await.unwrap(), 32 * 48);
                // The same write again changes nothing.
                store.upsert_forecasts(&batch, "v1", made).await.unwrap();
                let f = store.forecast(&Subject::Meter("m07".into()), t0, t0 + TimeDelta::hours(48)).await.unwrap().unwrap();
                assert_eq!((f.hours.len(), f.model_version.as_str(), f.made_at, f.meters), (48, "v1", made, 1));
                assert_eq!(f.hours[5], ForecastHour { ts: t0 + TimeDelta::hours(5), p10: 10.0, p50: 11.0, p90: 12.0 });
                // A newer forecast from hour 24 on replaces those hours only.
                let newer = vec![NewForecast {
                    subject: Subject::Meter("m07".into()),
                    meters: 1,
                    hours: hours(48, 20.0).into_iter().skip(24).collect(),
                }];
                store.upsert_forecasts(&newer, "v2", t0 + TimeDelta::hours(23)).await.unwrap();
                let f = store.forecast(&Subject::Meter("m07".into()), t0, t0 + TimeDelta::hours(48)).await.unwrap().unwrap();
                assert_eq!((f.hours[23].p50, f.hours[24].p50, f.model_version.as_str()), (11.0, 21.0, "v2"));
                let feeder = store.forecast(&Subject::Feeder("f-01".into()), t0, t0 + TimeDelta::hours(2)).await.unwrap().unwrap();
                assert_eq!((feeder.hours.len(), feeder.meters), (2, 30));
                assert!(store.forecast(&Subject::Fleet, t0 + TimeDelta::hours(48), t0 + TimeDelta::hours(60)).await.unwrap().is_none());
                assert!(store.forecast(&Subject::Feeder("f-99".into()), t0, t0 + TimeDelta::hours(48)).await.unwrap().is_none());
                // Not a number: refused, nothing written.
                let bad = vec![NewForecast { subject: Subject::Meter("m99".into()), meters: 1, hours: vec![ForecastHour { ts: t0, p10: f64::NAN, p50: 1.0, p90: 2.0 }] }];
                assert!(matches!(store.upsert_forecasts(&bad, "v3", t0).await, Err(StoreError::Invalid(_))));
                assert!(store.forecast(&Subject::Meter("m99".into()), t0, t0 + TimeDelta::hours(1)).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn temperatures_upsert_idempotently_and_a_newer_import_replaces_an_hour() {
                use super::super::temperatures::Temperature;
                let (_dir, store) = open().await;
                let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap().with_timezone(&Utc);
                let rows = |area: &str, n: i64, base: f64| -> Vec<Temperature> {
                    (0..n).map(|h| Temperature { area: area.into(), ts: t0 + TimeDelta::hours(h), celsius: base + (h % 50) as f64 }).collect()
                };
                // More hours than one INSERT statement holds, two areas.
                let mut all = rows("*", 400, -5.0);
                all.extend(rows("F1", 24, 1.0));
                assert_eq!(store.upsert_temperatures(&all).await.unwrap(), 424);
                store.upsert_temperatures(&all).await.unwrap();
                let read = store.temperatures(t0, t0 + TimeDelta::hours(500)).await.unwrap();
                assert_eq!(read.len(), 424);
                assert_eq!(read[0], Temperature { area: "*".into(), ts: t0, celsius: -5.0 });
                // A forecast imported again later replaces its hours; one write naming an hour
                // twice keeps the later value.
                let mut newer = rows("F1", 2, 10.0);
                newer.push(Temperature { area: "F1".into(), ts: t0, celsius: 12.5 });
                store.upsert_temperatures(&newer).await.unwrap();
                let f1: Vec<f64> = store.temperatures(t0, t0 + TimeDelta::hours(3)).await.unwrap()
                    .into_iter().filter(|t| t.area == "F1").map(|t| t.celsius).collect();
                assert_eq!(f1, vec![12.5, 11.0, 3.0]);
                // Not a plausible temperature: refused, nothing written.
                let bad = vec![Temperature { area: "F2".into(), ts: t0, celsius: 15.0 }, Temperature { area: "F2".into(), ts: t0 + TimeDelta::hours(1), celsius: f64::NAN }];
                assert!(matches!(store.upsert_temperatures(&bad).await, Err(StoreError::Invalid(_))));
                assert_eq!(store.temperatures(t0, t0 + TimeDelta::hours(500)).await.unwrap().len(), 424);
            }

            #[tokio::test]
            async fn meters_crud_paging_and_filters() {
                let (_d, store) = open().await;
                let fields = MeterFields {
                    feeder: Some(Some("F1".into())),
                    meter_class: Some(Some(MeterClass::Household)),
                    lat: Some(Some(52.1)),
                    lon: Some(Some(5.1)),
                    rated_current_a: Some(Some(40.0)),
                    installed_on: Some(Some(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())),
                    ..MeterFields::default()
                };
                let m = store.create_meter(&id("m-001"), &fields).await.unwrap();
                assert_eq!(m.status, MeterStatus::Active);
                assert!(matches!(
                    store.create_meter(&id("m-001"), &fields).await,
                    Err(StoreError::Conflict(_))
                ));
                for i in 2..=25 {
                    let feeder = if i % 2 == 0 { "F2" } else { "F1" };
                    store
                        .create_meter(
                            &id(&format!("m-{i:03}")),
                            &MeterFields {
                                feeder: Some(Some(feeder.into())),
                                ..MeterFields::default()
                            },
                        )
                        .await
                        .unwrap();
                }
                // Paging by id, with a filter.
                let mut seen = Vec::new();
                let mut after = None;
                loop {
                    let page = store
                        .list_meters(&MeterFilter {
                            feeder: Some("F1".into()),
                            after: after.clone(),
                            limit: Some(5),
                            ..MeterFilter::default()
                        })
                        .await
                        .unwrap();
                    if page.is_empty() {
                        break;
                    }
                    after = page.last().map(|m| m.meter_id.to_string());
                    seen.extend(page.into_iter().map(|m| m.meter_id.to_string()));
                }
                let expected: Vec<String> = (1..=25)
                    .filter(|i| i % 2 == 1)
                    .map(|i| format!("m-{i:03}"))
                    .collect();
                assert_eq!(seen, expected);
                let mut feeders = store.meter_feeders().await.unwrap();
                feeders.sort();
                assert_eq!(feeders.len(), 25);
                assert_eq!(store.meter_count().await.unwrap(), 25);
                assert_eq!(feeders[0], ("m-001".to_owned(), "F1".to_owned()));
                assert_eq!(feeders[1], ("m-002".to_owned(), "F2".to_owned()));
                // Update: absent keeps, null clears.
                let patch: MeterFields = serde_json::from_str(
                    r#"{"lat": null, "status": "decommissioned", "tariff_id": "T9"}"#,
                )
                .unwrap();
                let m = store.update_meter(&id("m-001"), &patch).await.unwrap();
                assert_eq!(m.lat, None);
                assert_eq!(m.lon, Some(5.1));
                assert_eq!(m.tariff_id.as_deref(), Some("T9"));
                assert_eq!(m.status, MeterStatus::Decommissioned);
                assert_eq!(m.rated_current_a, Some(40.0));
                let listed = store
                    .list_meters(&MeterFilter {
                        status: Some(MeterStatus::Decommissioned),
                        ..MeterFilter::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(listed.len(), 1);
                assert_eq!(store.meter(&id("m-001")).await.unwrap().unwrap(), m);
                assert!(store.delete_meter(&id("m-001")).await.unwrap());
                assert!(!store.delete_meter(&id("m-001")).await.unwrap());
                assert!(store.meter(&id("m-001")).await.unwrap().is_none());
                assert!(matches!(
                    store.update_meter(&id("m-001"), &patch).await,
                    Err(StoreError::NotFound(_))
                ));
            }

            #[tokio::test]
            async fn invalid_fields_are_refused() {
                let (_d, store) = open().await;
                for bad in [
                    r#"{"lat": 91}"#,
                    r#"{"rated_current_a": -1}"#,
                    r#"{"feeder": "a\u0000b"}"#,
                ] {
                    let f: MeterFields = serde_json::from_str(bad).unwrap();
                    assert!(
                        matches!(
                            store.create_meter(&id("x"), &f).await,
                            Err(StoreError::Invalid(_))
                        ),
                        "{bad}"
                    );
                }
                assert!(serde_json::from_str::<MeterFields>(r#"{"colour": "red"}"#).is_err());
                assert!(
                    serde_json::from_str::<MeterFields>(r#"{"meter_class": "factory"}"#).is_err()
                );
            }

            #[tokio::test]
            async fn upsert_is_all_or_nothing() {
                let (_d, store) = open().await;
                store
                    .create_meter(&id("a"), &MeterFields::default())
                    .await
                    .unwrap();
                let rows = vec![
                    (
                        id("a"),
                        MeterFields {
                            feeder: Some(Some("F".into())),
                            ..MeterFields::default()
                        },
                    ),
                    (id("b"), MeterFields::default()),
                ];
                assert_eq!(store.upsert_meters(&rows).await.unwrap(), (1, 1));
                assert_eq!(
                    store
                        .meter(&id("a"))
                        .await
                        .unwrap()
                        .unwrap()
                        .feeder
                        .as_deref(),
                    Some("F")
                );
                let bad = vec![
                    (id("c"), MeterFields::default()),
                    (
                        id("d"),
                        MeterFields {
                            lat: Some(Some(1000.0)),
                            ..MeterFields::default()
                        },
                    ),
                ];
                assert!(store.upsert_meters(&bad).await.is_err());
                assert!(store.meter(&id("c")).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn secrets_certificates_and_auto_registration() {
                let (_d, store) = open().await;
                assert!(store.auto_register(&id("auto")).await.unwrap());
                assert!(!store.auto_register(&id("auto")).await.unwrap());
                assert!(
                    store
                        .meter(&id("auto"))
                        .await
                        .unwrap()
                        .unwrap()
                        .auto_registered
                );
                let secret = generate_meter_secret();
                store
                    .set_meter_secret(&id("auto"), &hash_meter_secret(&secret).unwrap())
                    .await
                    .unwrap();
                let creds = store.meter_credentials(&id("auto")).await.unwrap().unwrap();
                let hash = creds.secret_hash.unwrap();
                assert!(hash.starts_with("$argon2id$"));
                assert!(!hash.contains(&secret));
                assert!(verify_meter_secret(&secret, &hash));
                assert!(!verify_meter_secret("wrong", &hash));
                assert!(
                    store
                        .meter_credentials(&id("nobody"))
                        .await
                        .unwrap()
                        .is_none()
                );
                assert!(matches!(
                    store.set_meter_secret(&id("nobody"), "x").await,
                    Err(StoreError::NotFound(_))
                ));

                let now = Utc::now();
                store
                    .record_certificate("0a1b", &id("auto"), now, now + TimeDelta::days(1))
                    .await
                    .unwrap();
                assert!(
                    store
                        .certificate("0a1b")
                        .await
                        .unwrap()
                        .unwrap()
                        .revoked_at
                        .is_none()
                );
                let revoked = store.revoke_certificate("0a1b").await.unwrap();
                assert!(revoked.revoked_at.is_some());
                assert_eq!(
                    store.certificates(&id("auto")).await.unwrap(),
                    vec![revoked]
                );
                assert!(matches!(
                    store.revoke_certificate("ffff").await,
                    Err(StoreError::NotFound(_))
                ));
                assert!(matches!(
                    store
                        .record_certificate("01", &id("nobody"), now, now)
                        .await,
                    Err(StoreError::NotFound(_))
                ));
            }

            #[tokio::test]
            async fn connectivity_follows_the_latest_session() {
                let (_d, store) = open().await;
                let m = id("c1");
                let t0 = Utc::now();
                store
                    .record_connect(&m, "s1", "secret", "10.0.0.1:5000", t0)
                    .await
                    .unwrap();
                store
                    .record_seen(&[(m.clone(), t0 + TimeDelta::seconds(5))])
                    .await
                    .unwrap();
                // A reconnect (session s2) before s1's disconnect is recorded.
                let t1 = t0 + TimeDelta::seconds(10);
                store
                    .record_connect(&m, "s2", "certificate", "10.0.0.1:5001", t1)
                    .await
                    .unwrap();
                store
                    .record_disconnect(&m, "s1", "replaced", t1)
                    .await
                    .unwrap();
                let c = store.connectivity(&m).await.unwrap().unwrap();
                assert!(c.online);
                assert_eq!(store.meters_online().await.unwrap(), 1);
                assert_eq!(c.session_id, "s2");
                assert_eq!(c.auth_method, "certificate");
                // last_seen never moves back.
                store.record_seen(&[(m.clone(), t0)]).await.unwrap();
                let c = store.connectivity(&m).await.unwrap().unwrap();
                assert_eq!(c.last_seen.timestamp_micros(), t1.timestamp_micros());
                store
                    .record_disconnect(&m, "s2", "client_disconnect", t1 + TimeDelta::seconds(1))
                    .await
                    .unwrap();
                let c = store.connectivity(&m).await.unwrap().unwrap();
                assert!(!c.online);
                assert_eq!(store.meters_online().await.unwrap(), 0);
                assert_eq!(c.disconnect_reason.as_deref(), Some("client_disconnect"));
            }

            #[tokio::test]
            async fn api_keys_authenticate_until_revoked() {
                let (_d, store) = open().await;
                assert!(!store.has_admin_key().await.unwrap());
                let (key, plaintext) = store
                    .create_api_key(Role::Analyst, "bi tool")
                    .await
                    .unwrap();
                let (_, admin) = store.create_api_key(Role::Admin, "root").await.unwrap();
                assert!(store.has_admin_key().await.unwrap());
                assert_eq!(
                    store
                        .authenticate_api_key(&plaintext)
                        .await
                        .unwrap()
                        .map(|k| k.role),
                    Some(Role::Analyst)
                );
                assert_eq!(
                    store
                        .authenticate_api_key(&admin)
                        .await
                        .unwrap()
                        .map(|k| k.role),
                    Some(Role::Admin)
                );
                // A wrong secret with a right id, garbage, and a revoked key are all refused.
                let forged = format!("msk_{}_{}", key.key_id, "0".repeat(64));
                assert!(store.authenticate_api_key(&forged).await.unwrap().is_none());
                assert!(
                    store
                        .authenticate_api_key("Bearer x")
                        .await
                        .unwrap()
                        .is_none()
                );
                assert!(store.authenticate_api_key("").await.unwrap().is_none());
                store.revoke_api_key(&key.key_id).await.unwrap();
                assert!(
                    store
                        .authenticate_api_key(&plaintext)
                        .await
                        .unwrap()
                        .is_none()
                );
                let keys = store.api_keys().await.unwrap();
                assert_eq!(keys.len(), 2);
                assert!(!keys.iter().any(|k| format!("{k:?}").contains(&plaintext)));
                assert!(matches!(
                    store.revoke_api_key("000000000000").await,
                    Err(StoreError::NotFound(_))
                ));
            }

            #[tokio::test]
            async fn alerts_lifecycle_is_idempotent_with_one_active_alert_per_subject() {
                use crate::records::{Alert, AlertEvent, AlertType};
                use crate::store::alerts::{AlertFilter, AlertState, Severity, Transition};
                let (_d, store) = open().await;
                let t0 = Utc::now() - TimeDelta::hours(1);
                let input = |id: &str, meter: &str, opened: bool, minutes: i64| Alert {
                    alert_id: id.into(),
                    event: if opened { AlertEvent::Opened } else { AlertEvent::Resolved },
                    kind: AlertType::VoltageSwell,
                    severity: Severity::Major,
                    meter_id: Some(meter.into()),
                    feeder: Some("F1".into()),
                    start: t0 + TimeDelta::minutes(minutes),
                    end: (!opened).then(|| t0 + TimeDelta::minutes(minutes + 30)),
                    at: t0 + TimeDelta::minutes(minutes),
                    evidence: serde_json::json!({"voltage_v": 262.0}),
                };
                let (a, t) = store.record_alert(&input("a1", "m-1", true, 0)).await.unwrap().unwrap();
                assert_eq!((a.state, t), (AlertState::Open, Transition::Opened));
                // A redelivery, and a second alert for the same meter and type: no change.
                assert!(store.record_alert(&input("a1", "m-1", true, 0)).await.unwrap().is_none());
                assert!(store.record_alert(&input("a2", "m-1", true, 5)).await.unwrap().is_none());
                assert!(store.alert("a2").await.unwrap().is_none());
                // Another meter is another subject.
                store.record_alert(&input("a3", "m-2", true, 10)).await.unwrap().unwrap();
                assert_eq!(store.open_alert_count().await.unwrap(), 2);

                let (a, t) = store.acknowledge_alert("a1", "ops-key").await.unwrap();
                assert_eq!(store.open_alert_count().await.unwrap(), 1);
                assert_eq!(t, Some(Transition::Acknowledged));
                assert_eq!(a.acknowledged_by.as_deref(), Some("ops-key"));
                assert!(a.acknowledged_at.is_some());
                let (_, t) = store.acknowledge_alert("a1", "other").await.unwrap();
                assert_eq!(t, None, "acknowledging twice changes nothing");
                // The condition clears: resolved by the pipeline, at most once.
                let (a, t) = store.record_alert(&input("a1", "m-1", false, 0)).await.unwrap().unwrap();
                assert_eq!((a.state, t, a.resolved_by.clone()), (AlertState::Resolved, Transition::Resolved, None));
                assert_eq!(a.acknowledged_by.as_deref(), Some("ops-key"));
                assert!(store.record_alert(&input("a1", "m-1", false, 0)).await.unwrap().is_none());
                assert!(matches!(
                    store.acknowledge_alert("a1", "late").await,
                    Err(StoreError::Conflict(_))
                ));
                // Once resolved, the subject may open a new alert.
                store.record_alert(&input("a4", "m-1", true, 60)).await.unwrap().unwrap();
                // An operator resolves one.
                let (a, t) = store.resolve_alert("a3", "ops-key").await.unwrap();
                assert_eq!((a.state, t), (AlertState::Resolved, Some(Transition::Resolved)));
                assert_eq!(a.resolved_by.as_deref(), Some("ops-key"));
                assert!(matches!(
                    store.resolve_alert("nope", "x").await,
                    Err(StoreError::NotFound(_))
                ));

                // Filters and paging, newest first.
                let ids = |v: Vec<crate::store::alerts::StoredAlert>| {
                    v.into_iter().map(|a| a.alert_id).collect::<Vec<_>>()
                };
                let all = store.list_alerts(&AlertFilter::default()).await.unwrap();
                assert_eq!(ids(all), ["a4", "a3", "a1"]);
                let open = AlertFilter { state: Some(AlertState::Open), ..AlertFilter::default() };
                assert_eq!(ids(store.list_alerts(&open).await.unwrap()), ["a4"]);
                let m1 = AlertFilter { meter: Some("m-1".into()), ..AlertFilter::default() };
                assert_eq!(ids(store.list_alerts(&m1).await.unwrap()), ["a4", "a1"]);
                let page = AlertFilter { limit: Some(2), ..AlertFilter::default() };
                assert_eq!(ids(store.list_alerts(&page).await.unwrap()), ["a4", "a3"]);
                let rest = AlertFilter { after: Some("a3".into()), ..page.clone() };
                assert_eq!(ids(store.list_alerts(&rest).await.unwrap()), ["a1"]);
                let window = AlertFilter {
                    from: Some(t0 + TimeDelta::minutes(5)),
                    to: Some(t0 + TimeDelta::minutes(61)),
                    feeder: Some("F1".into()),
                    severity: Some("major".into()),
                    alert_type: Some("voltage_swell".into()),
                    ..AlertFilter::default()
                };
                assert_eq!(ids(store.list_alerts(&window).await.unwrap()), ["a4", "a3"]);
            }

            #[tokio::test]
            async fn events_feed_the_outbox_of_matching_subscriptions() {
                use std::time::Duration;
                use crate::records::{Alert, AlertEvent, AlertType};
                use crate::store::alerts::Severity;
                use crate::store::webhooks::{
                    AttemptOutcome, AttemptRecord, DeliveryState, SubscriptionFilter,
                };
                let (_d, store) = open().await;
                let input = |id: &str, kind: &str, severity: &str, meter: &str, opened: bool| Alert {
                    alert_id: id.into(),
                    event: if opened { AlertEvent::Opened } else { AlertEvent::Resolved },
                    kind: AlertType::ALL.into_iter().find(|t| t.name() == kind).expect("a type"),
                    severity: Severity::parse(severity).expect("a severity"),
                    meter_id: Some(meter.into()),
                    feeder: Some("F1".into()),
                    start: Utc::now(),
                    end: None,
                    at: Utc::now(),
                    evidence: serde_json::json!({}),
                };
                let (all, secret) = store
                    .create_subscription("https://a.example/hook", "all", &SubscriptionFilter::default(), "ops")
                    .await
                    .unwrap();
                assert!(secret.starts_with("whsec_") && secret.len() > 40);
                let major = SubscriptionFilter {
                    min_severity: Some(Severity::Major),
                    meters: vec!["m-1".into()],
                    ..SubscriptionFilter::default()
                };
                let (picky, _) = store
                    .create_subscription("https://b.example/hook", "m-1 major+", &major, "ops")
                    .await
                    .unwrap();

                store.record_alert(&input("x1", "voltage_swell", "major", "m-1", true)).await.unwrap().unwrap();
                store.record_alert(&input("x2", "meter_silent", "minor", "m-1", true)).await.unwrap().unwrap();
                store.record_alert(&input("x3", "voltage_swell", "major", "m-2", true)).await.unwrap().unwrap();
                // A repeat appends nothing.
                assert!(store.record_alert(&input("x1", "voltage_swell", "major", "m-1", true)).await.unwrap().is_none());
                store.acknowledge_alert("x1", "ops").await.unwrap();

                let page = store.events_after(0, 100).await.unwrap();
                let kinds: Vec<_> = page.events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
                assert_eq!(kinds, ["alert.opened", "alert.opened", "alert.opened", "alert.acknowledged"]);
                assert_eq!(page.next, 4);
                assert_eq!(store.last_event_seq().await.unwrap(), 4);
                assert_eq!(page.events[3]["data"]["alert"]["state"], "acknowledged");
                assert!(store.events_after(4, 100).await.unwrap().events.is_empty());
                // A long poll returns as soon as an event commits.
                let waiter = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store.wait_events(4, 10, Duration::from_secs(20), Duration::from_secs(5)).await
                    })
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
                store.resolve_alert("x2", "ops").await.unwrap();
                let woke = tokio::time::timeout(Duration::from_secs(3), waiter).await.unwrap().unwrap().unwrap();
                assert_eq!(woke.events[0]["type"], "alert.resolved");
                assert_eq!(woke.next, 5);

                let count = |sub: &str, state| {
                    let store = store.clone();
                    let sub = sub.to_owned();
                    async move { store.list_deliveries(&sub, state, None, 100).await.unwrap().len() }
                };
                assert_eq!(count(&all.subscription_id, None).await, 5);
                // Major and above, meter m-1 only: x1 opened and acknowledged.
                assert_eq!(count(&picky.subscription_id, None).await, 2);

                // Attempts: a failure with a retry, then success.
                let due = store.due_deliveries(Utc::now(), None, 100).await.unwrap();
                assert_eq!(due.len(), 7);
                assert_eq!(store.due_subscriptions(Utc::now()).await.unwrap().len(), 2);
                let mine = store.due_deliveries(Utc::now(), Some(&picky.subscription_id), 100).await.unwrap();
                assert_eq!(mine.len(), 2);
                // A claim holds a delivery until its lease ends; a second claim fails.
                assert!(store.claim(&mine[1], Utc::now() + TimeDelta::seconds(30)).await.unwrap());
                assert!(!store.claim(&mine[1], Utc::now() + TimeDelta::seconds(30)).await.unwrap());
                assert_eq!(store.due_deliveries(Utc::now(), Some(&picky.subscription_id), 100).await.unwrap().len(), 1);
                let job = due.iter().find(|j| j.subscription_id == picky.subscription_id).unwrap().clone();
                assert_eq!(job.secrets.len(), 1);
                let later = Utc::now() + TimeDelta::seconds(60);
                store.record_attempt(&job, &AttemptRecord {
                    at: Utc::now(), status: Some(503), latency: Duration::from_millis(12),
                    error: Some("503 Service Unavailable".into()), outcome: AttemptOutcome::Retry(later),
                }).await.unwrap();
                assert!(store.due_deliveries(Utc::now(), None, 100).await.unwrap().iter().all(|j| j.seq != job.seq || j.subscription_id != job.subscription_id));
                let retry = store.due_deliveries(later, None, 100).await.unwrap().into_iter()
                    .find(|j| j.seq == job.seq && j.subscription_id == job.subscription_id).unwrap();
                assert_eq!(retry.attempts, 1);
                store.record_attempt(&retry, &AttemptRecord {
                    at: Utc::now(), status: Some(200), latency: Duration::from_millis(3),
                    error: None, outcome: AttemptOutcome::Delivered,
                }).await.unwrap();
                let log = store.list_attempts(&picky.subscription_id, Some(job.seq), None, 10).await.unwrap();
                assert_eq!(log.iter().map(|a| (a.attempt, a.status)).collect::<Vec<_>>(), [(2, Some(200)), (1, Some(503))]);
                assert_eq!(count(&picky.subscription_id, Some(DeliveryState::Delivered)).await, 1);

                // Out of attempts: a dead letter, which replay queues again.
                let other = store.due_deliveries(Utc::now() + TimeDelta::seconds(31), None, 100).await.unwrap().into_iter()
                    .find(|j| j.subscription_id == picky.subscription_id).unwrap();
                store.record_attempt(&other, &AttemptRecord {
                    at: Utc::now(), status: None, latency: Duration::from_secs(10),
                    error: Some("timed out".into()), outcome: AttemptOutcome::Dead,
                }).await.unwrap();
                assert_eq!(count(&picky.subscription_id, Some(DeliveryState::Dead)).await, 1);
                let n = store.replay(&picky.subscription_id, Utc::now() - TimeDelta::hours(1)).await.unwrap();
                assert_eq!(n, 1);
                assert_eq!(count(&picky.subscription_id, Some(DeliveryState::Pending)).await, 1);

                // Rotation: both secrets sign during the overlap.
                let (_, new_secret) = store.rotate_secret(&picky.subscription_id, Duration::from_secs(3600)).await.unwrap();
                let job = store.due_deliveries(Utc::now(), None, 100).await.unwrap().into_iter()
                    .find(|j| j.subscription_id == picky.subscription_id).unwrap();
                assert_eq!(job.secrets.len(), 2);
                assert_eq!(job.secrets[0], new_secret);

                // 410 Gone disables the subscription and kills its pending deliveries.
                store.record_attempt(&job, &AttemptRecord {
                    at: Utc::now(), status: Some(410), latency: Duration::from_millis(1),
                    error: Some("410 Gone".into()), outcome: AttemptOutcome::Gone("the receiver answered 410 Gone".into()),
                }).await.unwrap();
                let sub = store.subscription(&picky.subscription_id).await.unwrap();
                assert!(!sub.enabled);
                assert_eq!(count(&picky.subscription_id, Some(DeliveryState::Pending)).await, 0);
                assert!(matches!(store.replay(&picky.subscription_id, Utc::now()).await, Err(StoreError::Conflict(_))));

                // Reminders: open alerts older than their severity's time, once per period.
                let due = store.due_reminders(Utc::now() + TimeDelta::minutes(20), |s| {
                    (s == Severity::Minor || s == Severity::Major).then_some(Duration::from_secs(600))
                }).await.unwrap();
                let ids: Vec<_> = due.iter().map(|(a, _)| a.alert_id.clone()).collect();
                assert_eq!(ids, ["x3"], "x1 is acknowledged, x2 resolved");
                assert!(store.remind(&due[0].0, due[0].1).await.unwrap());
                assert!(!store.remind(&due[0].0, due[0].1).await.unwrap(), "claimed once");
                let last = store.events_after(5, 10).await.unwrap();
                assert_eq!(last.events[0]["type"], "alert.reminder");

                store.delete_subscription(&all.subscription_id).await.unwrap();
                assert!(matches!(store.subscription(&all.subscription_id).await, Err(StoreError::NotFound(_))));
            }
        }
    };
}

suite!(sqlite_store, sqlite);
suite!(postgres_store, postgres);

#[test]
fn redact_hides_passwords() {
    assert_eq!(
        super::redact("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
}
