//! What the pipeline needs to know about each meter, from the meter registry.

use std::collections::HashMap;

use chrono::NaiveDate;
use meterstack_core::store::meters::{Meter, MeterClass};

/// One meter's registry facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterInfo {
    /// Its class, which selects its rules.
    pub class: Option<MeterClass>,
    /// Its feeder.
    pub feeder: Option<String>,
    /// Rated current, A.
    pub rated_current_a: Option<f64>,
    /// When it was exchanged (registers restart that day).
    pub exchanged_on: Option<NaiveDate>,
}

impl MeterInfo {
    /// Whether the meter only imports (any export is reverse flow). Unknown classes are not
    /// judged.
    pub fn import_only(&self) -> bool {
        matches!(
            self.class,
            Some(MeterClass::Household | MeterClass::Commercial)
        )
    }
}

impl From<&Meter> for MeterInfo {
    fn from(m: &Meter) -> Self {
        Self {
            class: m.meter_class,
            feeder: m.feeder.clone(),
            rated_current_a: m.rated_current_a,
            exchanged_on: m.exchanged_on,
        }
    }
}

/// Every meter's facts, and the size of each feeder.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    meters: HashMap<String, MeterInfo>,
    feeder_sizes: HashMap<String, usize>,
}

impl Registry {
    /// A registry of `meters` (id, facts).
    pub fn new(meters: impl IntoIterator<Item = (String, MeterInfo)>) -> Self {
        let meters: HashMap<String, MeterInfo> = meters.into_iter().collect();
        let mut feeder_sizes: HashMap<String, usize> = HashMap::new();
        for info in meters.values() {
            if let Some(f) = &info.feeder {
                *feeder_sizes.entry(f.clone()).or_default() += 1;
            }
        }
        Self {
            meters,
            feeder_sizes,
        }
    }

    /// The facts of `meter_id` (defaults for a meter the registry does not know).
    pub fn get(&self, meter_id: &str) -> Option<&MeterInfo> {
        self.meters.get(meter_id)
    }

    /// Every meter with its facts.
    pub fn meters(&self) -> impl Iterator<Item = (&str, &MeterInfo)> {
        self.meters.iter().map(|(id, m)| (id.as_str(), m))
    }

    /// Meters registered on `feeder`.
    pub fn feeder_size(&self, feeder: &str) -> usize {
        self.feeder_sizes.get(feeder).copied().unwrap_or(0)
    }

    /// Every feeder with its size.
    pub fn feeders(&self) -> impl Iterator<Item = (&str, usize)> {
        self.feeder_sizes.iter().map(|(f, n)| (f.as_str(), *n))
    }

    /// How many meters it knows.
    pub fn len(&self) -> usize {
        self.meters.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }
}

impl Registry {
    /// Loads every meter of the SQL store's registry, page by page.
    pub async fn load(
        store: &meterstack_core::store::SqlStore,
    ) -> Result<Self, meterstack_core::store::StoreError> {
        use meterstack_core::store::meters::MeterFilter;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_meters(&MeterFilter {
                    after: after.clone(),
                    limit: Some(1000),
                    ..MeterFilter::default()
                })
                .await?;
            let last = page.last().map(|m| m.meter_id.to_string());
            all.extend(
                page.iter()
                    .map(|m| (m.meter_id.to_string(), MeterInfo::from(m))),
            );
            if page.len() < 1000 {
                break;
            }
            after = last;
        }
        Ok(Self::new(all))
    }
}
