#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn example(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/tariffs/urdb")
        .join(file);
    std::fs::read_to_string(path).expect("example tariff")
}

#[test]
fn every_example_record_reads() {
    for file in [
        "hpxml-sample-flat-min-monthly.json",
        "jackson-emc-seasonal-tiered.json",
        "pge-e19-tou-demand.json",
        "psco-rd-residential-demand.json",
        "psco-re-tou-residential.json",
        "pysam-urdbv7-test.json",
    ] {
        let doc = Document::parse(
            &example(file),
            Some("x"),
            NaiveDate::from_ymd_opt(2020, 1, 1),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        doc.tariff().unwrap();
    }
    let e19 = Document::parse(&example("pge-e19-tou-demand.json"), None, None)
        .unwrap()
        .tariff()
        .unwrap();
    assert_eq!(e19.id, "5cef0a415457a33576f60fe2");
    assert_eq!(
        e19.effective_from,
        NaiveDate::from_ymd_opt(2019, 5, 1).unwrap()
    );
    assert_eq!(
        e19.fixed,
        vec![Recurring {
            amount: 19.71253,
            per: Per::Day
        }]
    );
    assert_eq!(e19.demand.len(), 4);
    assert_eq!(e19.flat_demand_months.unwrap()[5], 1);
    let legacy = Document::parse(
        &example("pysam-urdbv7-test.json"),
        Some("x"),
        NaiveDate::from_ymd_opt(2020, 1, 1),
    )
    .unwrap()
    .tariff()
    .unwrap();
    assert_eq!(
        legacy.energy[0][1].max, None,
        "the 1e38 sentinel is no limit"
    );
    assert_eq!(legacy.minimum.len(), 2);
}

#[test]
fn the_native_form_reads_as_toml_and_keeps_its_settings() {
    let text = r#"
id = "R-1"
currency = "EUR"
effective_from = 2026-01-01
billing_day = 15
taxes = [{ name = "VAT", percent = 19.0 }]
[urdb]
energyratestructure = [[{ rate = 0.3 }]]
"#;
    let t = Document::parse(text, None, None).unwrap().tariff().unwrap();
    assert_eq!(
        (t.id.as_str(), t.currency.as_str(), t.billing_day),
        ("R-1", "EUR", 15)
    );
    assert_eq!(t.taxes[0].percent, 19.0);
    assert_eq!(
        t.effective_from,
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    );
    let e = Document::parse(
        "id = \"x\"\neffective_from = 2026-01-01\n[urdb]\nenergyratestructure = [[{ rate = nan }]]",
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.field, "urdb.energyratestructure[0][0].rate", "{e}");
}

fn refused(urdb: serde_json::Value) -> TariffError {
    let doc = json!({"id": "T", "effective_from": "2020-01-01", "urdb": urdb});
    Document::parse(&doc.to_string(), None, None).unwrap_err()
}

#[test]
fn bad_records_are_refused_by_field() {
    let ok = || {
        json!({"energyratestructure": [[{"rate": 0.1}], [{"rate": 0.2}]],
        "energyweekdayschedule": vec![vec![0; 24]; 12], "energyweekendschedule": vec![vec![1; 24]; 12]})
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut r = ok();
                r["energyweekdayschedule"] = json!(vec![vec![0; 24]; 11]);
                r
            },
            "urdb.energyweekdayschedule: must be 12 × 24",
        ),
        (
            {
                let mut r = ok();
                r["energyweekendschedule"][3] = json!(vec![0; 23]);
                r
            },
            "urdb.energyweekendschedule[3]",
        ),
        (
            {
                let mut r = ok();
                r["energyweekdayschedule"][2][7] = json!(2);
                r
            },
            "urdb.energyweekdayschedule[2][7]: period 2 is out of range",
        ),
        (
            {
                let mut r = ok();
                r["energyweekdayschedule"][0][0] = json!(0.5);
                r
            },
            "out of range",
        ),
        (
            {
                let mut r = ok();
                r["energyratestructure"][0] =
                    json!([{"rate": 0.1, "max": 500}, {"rate": 0.2, "max": 100}, {"rate": 0.3}]);
                r
            },
            "urdb.energyratestructure[0][1].max: tiers out of order",
        ),
        (
            {
                let mut r = ok();
                r["energyratestructure"][1] = json!([{"rate": 0.1}, {"rate": 0.2}]);
                r
            },
            "urdb.energyratestructure[1][0].max: tiers out of order",
        ),
        (
            {
                let mut r = ok();
                r["energyratestructure"][1] = json!([{"adj": 0.1}]);
                r
            },
            "urdb.energyratestructure[1][0].rate: missing",
        ),
        (
            {
                let mut r = ok();
                r["energyratestructure"][1] = json!([{"rate": 0.1, "unit": "therms"}]);
                r
            },
            "unknown unit",
        ),
        (
            {
                let mut r = ok();
                r["energyratestructure"] = json!({"rate": 1});
                r
            },
            "urdb.energyratestructure: must be an array",
        ),
        (
            {
                let mut r = ok();
                r["dgrules"] = json!("Feed-in");
                r
            },
            "urdb.dgrules: unknown rule",
        ),
        (
            {
                let mut r = ok();
                r["lookbackpercent"] = json!(0.8);
                r
            },
            "urdb.lookbackpercent: demand ratchets",
        ),
        (
            {
                let mut r = ok();
                r["fixedchargeunits"] = json!("$/week");
                r["fixedchargefirstmeter"] = json!(1);
                r
            },
            "urdb.fixedchargeunits",
        ),
        (
            {
                let mut r = ok();
                r["flatdemandmonths"] = json!(vec![0; 12]);
                r
            },
            "urdb.flatdemandstructure: missing",
        ),
        (
            {
                let mut r = ok();
                r.as_object_mut().unwrap().remove("energyweekendschedule");
                r
            },
            "urdb.energyweekendschedule: missing",
        ),
        (json!({}), "urdb.energyratestructure: missing"),
    ];
    for (urdb, expected) in cases {
        let e = refused(urdb).to_string();
        assert!(e.contains(expected), "{e:?} should say {expected:?}");
    }
    let bad_day =
        json!({"id": "T", "effective_from": "2020-01-01", "billing_day": 31, "urdb": ok()});
    assert!(
        Document::parse(&bad_day.to_string(), None, None)
            .unwrap_err()
            .to_string()
            .starts_with("billing_day")
    );
    let no_date = json!({"energyratestructure": [[{"rate": 0.1}]]});
    assert!(
        Document::parse(&no_date.to_string(), Some("x"), None)
            .unwrap_err()
            .to_string()
            .starts_with("effective_from")
    );
}
