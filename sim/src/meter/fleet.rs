//! The fleet: each meter's class, consumption, solar, rated current, feeder and faults for a
//! life, drawn from a stream seeded by (seed, meter number); the registry CSV of it.

use super::*;

/// A meter's customer class (the registry's `meter_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A home (BDEW H25).
    Household,
    /// A shop or office (BDEW G25).
    Commercial,
    /// A home with rooftop solar that exports its surplus.
    Prosumer,
}

impl Class {
    /// The registry's name of the class.
    pub fn name(self) -> &'static str {
        match self {
            Class::Household => "household",
            Class::Commercial => "commercial",
            Class::Prosumer => "prosumer",
        }
    }
}

impl From<Class> for meterstack_core::store::meters::MeterClass {
    fn from(c: Class) -> Self {
        match c {
            Class::Household => Self::Household,
            Class::Commercial => Self::Commercial,
            Class::Prosumer => Self::Prosumer,
        }
    }
}

/// The fleet's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Number of meters.
    pub meters: usize,
    /// Meter ids are this prefix and a zero-padded number: `m-001`, `m-002`, …
    pub id_prefix: String,
    /// Share of commercial meters.
    pub commercial_share: f64,
    /// Share of prosumers (households with solar).
    pub prosumer_share: f64,
    /// Meters per feeder (consecutive meters share one).
    pub meters_per_feeder: usize,
    /// Local time zone of the fleet (IANA name).
    pub timezone: String,
    /// Latitude of the fleet's area, degrees.
    pub latitude: f64,
    /// Longitude of the fleet's area, degrees.
    pub longitude: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            meters: 10,
            id_prefix: "m-".into(),
            commercial_share: 0.1,
            prosumer_share: 0.1,
            meters_per_feeder: 40,
            timezone: "Europe/Berlin".into(),
            latitude: 51.0,
            longitude: 10.0,
        }
    }
}

/// One meter as built: its identity, class and the parameters of its behaviour.
#[derive(Debug, Clone)]
pub struct MeterSpec {
    /// Position in the fleet, from 1.
    pub n: u64,
    /// Its id.
    pub id: MeterId,
    /// Its class.
    pub class: Class,
    /// Its feeder's id.
    pub feeder: String,
    /// Index of the feeder, from 0.
    pub feeder_index: u64,
    /// Every meter of its feeder, when this meter is the feeder's first (it writes the
    /// feeder's outage labels).
    pub feeder_members: Option<Arc<[String]>>,
    /// Annual consumption, kWh.
    pub annual_kwh: f64,
    /// Installed solar power, kWp (prosumers only).
    pub pv_kwp: f64,
    /// Rated (maximum) current, A.
    pub rated_current_a: f64,
    /// Location.
    pub lat: f64,
    /// Location.
    pub lon: f64,
    /// Its date of exchange, if one is planned (the registry's `exchanged_on`).
    pub exchanged_on: Option<NaiveDate>,
    pub(crate) shift_quarters: i32,
    pub(crate) noise_sigma: f64,
    pub(crate) capacity_wh: f64,
    pub(crate) initial_import_wh: f64,
    pub(crate) voltage_bias: f64,
    pub(crate) once: Vec<Planned>,
}

impl MeterSpec {
    /// Rated power, W: rated current × nominal voltage × phases (businesses are three-phase).
    pub fn rated_w(&self) -> f64 {
        let phases = if self.class == Class::Commercial {
            3.0
        } else {
            1.0
        };
        self.rated_current_a * NOMINAL_V * phases
    }

    /// Whether the meter has no export register in normal use.
    pub fn import_only(&self) -> bool {
        self.class != Class::Prosumer
    }
}

/// What every meter of a run shares.
#[derive(Debug, Clone)]
pub struct RunShape {
    /// First tick (the timestamp of the first reading).
    pub start: DateTime<Utc>,
    /// Interval.
    pub dt: TimeDelta,
    /// How long the run lasts, if known (faults are planned to end within it).
    pub horizon: Option<TimeDelta>,
    /// The fleet's seed.
    pub seed: u64,
    /// Fault settings.
    pub faults: Arc<FaultConfig>,
    /// Readings each meter keeps for resending.
    pub buffer: usize,
}

impl RunShape {
    /// A run of `days` days of 15-minute readings from `start` without faults: a fleet's true
    /// history (what forecasts are trained and scored on).
    pub fn clean(start: DateTime<Utc>, days: usize, seed: u64) -> Self {
        Self {
            start,
            dt: TimeDelta::minutes(15),
            horizon: Some(TimeDelta::days(days as i64 + 1)),
            seed,
            faults: Arc::new(FaultConfig::none()),
            buffer: 192,
        }
    }
}

/// Builds the fleet's meters (deterministic in `shape.seed`).
pub fn build_fleet(config: &FleetConfig, shape: &RunShape) -> Result<Vec<MeterSpec>, String> {
    let width = config.meters.to_string().len().max(3);
    let feeders = config.meters.div_ceil(config.meters_per_feeder.max(1));
    let feeder_width = feeders.to_string().len().max(2);
    let horizon = shape.horizon.unwrap_or(TimeDelta::days(30));
    let mut specs = Vec::with_capacity(config.meters);
    let mut members: Vec<String> = Vec::new();
    for n in 1..=config.meters as u64 {
        let id = MeterId::new(&format!("{}{:0width$}", config.id_prefix, n))
            .map_err(|e| e.to_string())?;
        let feeder_index = (n - 1) / config.meters_per_feeder.max(1) as u64;
        let feeder = format!("f-{:0feeder_width$}", feeder_index + 1);
        let mut rng = StdRng::seed_from_u64(shape.seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        let u: f64 = rng.random();
        let class = if u < config.commercial_share {
            Class::Commercial
        } else if u < config.commercial_share + config.prosumer_share {
            Class::Prosumer
        } else {
            Class::Household
        };
        // Log-normal annual consumption around the class median.
        let (median, spread) = match class {
            Class::Household => (3_000.0, 0.4),
            Class::Prosumer => (4_500.0, 0.3),
            Class::Commercial => (40_000.0, 0.8),
        };
        let annual_kwh: f64 = (median * (spread * normal(&mut rng)).exp()).clamp(500.0, 400_000.0);
        let pv_kwp = if class == Class::Prosumer {
            rng.random_range(3.0..12.0_f64)
        } else {
            0.0
        };
        let rated_current_a = match class {
            Class::Commercial if annual_kwh > 100_000.0 => 250.0,
            Class::Commercial => 100.0,
            _ => 63.0,
        };
        // Register capacity: 99,999.9 kWh for homes, 9,999,999.9 kWh for businesses.
        let capacity_wh = if class == Class::Commercial {
            1.0e10
        } else {
            1.0e8
        };
        let mut initial_import_wh = (rng.random_range(0.02..0.3_f64) * capacity_wh).round();
        let once = faults::plan_once(
            &shape.faults,
            shape.seed,
            n,
            feeder_index,
            shape.start,
            horizon,
            shape.dt,
        );
        let mut exchanged_on = None;
        for p in &once {
            match p.kind {
                FaultType::RegisterRollover => {
                    // Start close enough to the capacity to pass it about when planned.
                    let expected =
                        annual_kwh * 1000.0 * (p.start - shape.start).num_seconds() as f64
                            / (365.25 * 86_400.0);
                    initial_import_wh = (capacity_wh - expected).max(0.0).round();
                }
                FaultType::MeterExchange => exchanged_on = Some(p.start.date_naive()),
                _ => {}
            }
        }
        members.push(id.to_string());
        let last_of_feeder = (n as usize).is_multiple_of(config.meters_per_feeder.max(1))
            || n as usize == config.meters;
        let spec = MeterSpec {
            n,
            id,
            class,
            feeder,
            feeder_index,
            feeder_members: None,
            annual_kwh,
            pv_kwp,
            rated_current_a,
            lat: config.latitude + rng.random_range(-0.05..0.05),
            lon: config.longitude + rng.random_range(-0.08..0.08),
            exchanged_on,
            shift_quarters: rng.random_range(-3..=3),
            noise_sigma: match class {
                Class::Commercial => rng.random_range(0.05..0.15),
                // Households' lumps come from their appliance runs (`household`).
                _ => rng.random_range(0.08..0.16),
            },
            capacity_wh,
            initial_import_wh,
            voltage_bias: rng.random_range(-3.0..3.0),
            once,
        };
        specs.push(spec);
        if last_of_feeder {
            let list: Arc<[String]> = std::mem::take(&mut members).into();
            let first = specs.len() - list.len();
            specs[first].feeder_members = Some(list);
        }
    }
    Ok(specs)
}

/// The fleet as a registry CSV (`meterstack meters import`).
pub fn registry_csv(specs: &[MeterSpec]) -> String {
    let mut out = String::from(
        "meter_id,feeder,transformer,lat,lon,meter_class,rated_current_a,exchanged_on\n",
    );
    for s in specs {
        let transformer = format!("{}-t{}", s.feeder, (s.n - 1) % 40 / 10 + 1);
        out.push_str(&format!(
            "{},{},{},{:.5},{:.5},{},{},{}\n",
            s.id,
            s.feeder,
            transformer,
            s.lat,
            s.lon,
            s.class.name(),
            s.rated_current_a,
            s.exchanged_on.map(|d| d.to_string()).unwrap_or_default()
        ));
    }
    out
}
