//! The model registry: a round trip, a damaged artifact refused, promotion and rollback, and
//! the newest model that saw nothing after a time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use meterstack_ml::model::gbm::{Gbm, GbmConfig};
use meterstack_ml::registry::{ModelMeta, ModelRegistry, RegistryError};
use meterstack_ml::series::start_of;
use meterstack_ml::{Calendar, CalendarConfig, Forecaster, ModelKind, Series};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

fn small_model() -> (Gbm, Vec<Series>) {
    let frame: Vec<Series> = (0..6)
        .map(|m| {
            let mut s = Series::new(format!("m{m}"), None);
            for h in 0..24 * 40 {
                let daily = 1.0 + (((h % 24) as f64) / 24.0 * std::f64::consts::TAU).sin();
                s.set(
                    h,
                    100.0 * f64::from(m + 1) * daily + ((h * 7919) % 13) as f64,
                );
            }
            s
        })
        .collect();
    let refs: Vec<&Series> = frame.iter().collect();
    let cal = Calendar::new(&CalendarConfig::default()).unwrap();
    let config = GbmConfig {
        budget: 0.3,
        max_rows: 5_000,
        ..GbmConfig::default()
    };
    (Gbm::fit(&refs, 24 * 40, &cal, &config).unwrap(), frame)
}

fn meta(until: &str) -> ModelMeta {
    let until: DateTime<Utc> = until.parse().unwrap();
    ModelMeta {
        version: String::new(),
        kind: ModelKind::Gbm,
        trained_at: Utc::now(),
        data_from: start_of(0),
        data_until: until,
        meters: 6,
        rows: 0,
        features: Vec::new(),
        params: GbmConfig::default(),
        code_version: "test".into(),
        sha256: String::new(),
        backtest: Vec::new(),
    }
}

#[tokio::test]
async fn versions_round_trip_damage_is_refused_and_rollback_restores_the_previous() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let registry = ModelRegistry::new(store.clone());
    let (model, frame) = small_model();
    let a = registry
        .register(&model, meta("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let b = registry
        .register(&model, meta("2026-02-01T00:00:00Z"))
        .await
        .unwrap();
    assert_ne!(a.version, b.version);

    // Round trip: the loaded model predicts exactly as the one registered.
    let (loaded_meta, loaded) = registry.load(&a.version).await.unwrap();
    assert_eq!(loaded_meta, a);
    let cal = Calendar::new(&CalendarConfig::default()).unwrap();
    let refs: Vec<&Series> = frame.iter().collect();
    let before = model.predict(&refs, 24 * 38, 24, &cal);
    let after = loaded.predict(&refs, 24 * 38, 24, &cal);
    assert_eq!(before, after);
    assert!(before[0][0].p50.is_finite());

    // Promotion and rollback.
    assert_eq!(registry.current().await.unwrap(), None);
    assert!(matches!(
        registry.rollback().await,
        Err(RegistryError::NoHistory)
    ));
    registry.promote(&a.version).await.unwrap();
    registry.promote(&b.version).await.unwrap();
    assert_eq!(
        registry.current().await.unwrap().as_deref(),
        Some(b.version.as_str())
    );
    assert_eq!(registry.rollback().await.unwrap(), a.version);
    assert_eq!(
        registry.current().await.unwrap().as_deref(),
        Some(a.version.as_str())
    );

    // As of a time: the newest model whose data ended by then.
    let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let pick = registry
        .newest_before(t("2026-01-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(pick.map(|m| m.version), Some(a.version.clone()));
    assert!(
        registry
            .newest_before(t("2025-12-31T23:00:00Z"))
            .await
            .unwrap()
            .is_none()
    );

    // A damaged artifact is refused, by hash and by content; a current model that is damaged
    // cannot be promoted again, and the listing still shows the others.
    let path = Path::from(format!("models/{}/model.json", b.version));
    store
        .put(&path, b"{\"features\": []}".to_vec().into())
        .await
        .unwrap();
    let err = registry.load(&b.version).await.unwrap_err();
    assert!(matches!(err, RegistryError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(registry.promote(&b.version).await.is_err());
    assert_eq!(
        registry.current().await.unwrap().as_deref(),
        Some(a.version.as_str())
    );
    assert!(matches!(
        registry.load("no-such-version").await,
        Err(RegistryError::NotFound(_))
    ));
    let (metas, bad) = registry.list().await.unwrap();
    assert_eq!((metas.len(), bad.len()), (2, 0));
}

#[test]
fn an_artifact_that_is_not_a_model_is_refused() {
    assert!(Gbm::from_json(b"not json").is_err());
    assert!(
        Gbm::from_json(b"{\"features\":[\"x\"],\"boosters\":[],\"band_scale\":1.0,\"rows\":0}")
            .is_err()
    );
}
