//! Scoring a pipeline against the simulator's labels (`meterstack eval`): what the pipeline
//! emitted, turned into findings of the fault types the simulator injects, matched to the
//! labels (same type and subject, times within two intervals), and precision, recall and F1
//! per type.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::records::{
    Aggregate, Alert, AlertEvent, AlertType, CleanReading, RejectedReading, Rule, Width,
};
use meterstack_core::wire::command::{Command, CommandMessage};
use serde::Serialize;

use crate::{FaultType, Label};

/// What the pipeline emitted in one step, as [`findings`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'a> {
    /// Validated readings.
    pub clean: &'a [CleanReading],
    /// Rejected readings.
    pub rejected: &'a [RejectedReading],
    /// Commands to meters, with the meter id.
    pub commands: &'a [(String, CommandMessage)],
    /// Window aggregates.
    pub aggregates: &'a [Aggregate],
    /// Alert events.
    pub alerts: &'a [Alert],
}

/// The score of one type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    /// Labels of the type.
    pub labels: usize,
    /// Findings of the type.
    pub findings: usize,
    /// Labels some finding matched.
    pub matched_labels: usize,
    /// Findings that matched a label.
    pub matched_findings: usize,
    /// matched findings / findings.
    pub precision: f64,
    /// matched labels / labels.
    pub recall: f64,
    /// Their harmonic mean.
    pub f1: f64,
}

/// One thing the pipeline found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The fault type it indicates.
    pub kind: FaultType,
    /// The meter, or the feeder of a feeder outage.
    pub subject: String,
    /// From.
    pub start: DateTime<Utc>,
    /// To.
    pub end: DateTime<Utc>,
}

/// The pipeline's findings in `out`, as fault types.
pub fn findings(out: Outputs<'_>, dt: TimeDelta, into: &mut Vec<Finding>) {
    let by_rule = |rule: Rule| match rule {
        Rule::Duplicate => Some(FaultType::Duplicate),
        Rule::OutOfOrder => Some(FaultType::OutOfOrder),
        Rule::Late => Some(FaultType::Late),
        Rule::ClockSkew => Some(FaultType::ClockSkew),
        Rule::RegisterRollover => Some(FaultType::RegisterRollover),
        Rule::MeterExchange => Some(FaultType::MeterExchange),
        Rule::RegisterReset => Some(FaultType::RegisterReset),
        Rule::Spike => Some(FaultType::Spike),
        Rule::FrozenRegister => Some(FaultType::FrozenRegister),
        Rule::Backfill => Some(FaultType::ConnectionDrop),
        _ => None,
    };
    let mut push = |kind, subject: &str, start, end| {
        into.push(Finding {
            kind,
            subject: subject.to_owned(),
            start,
            end,
        })
    };
    for r in out.clean {
        for kind in r
            .rule
            .iter()
            .chain(&r.also)
            .filter_map(|rule| by_rule(*rule))
        {
            push(kind, &r.meter_id, r.ts, r.ts);
        }
    }
    for r in out.rejected {
        if let (Some(kind), Some(m), Some(ts)) = (by_rule(r.rule), &r.meter_id, r.ts) {
            push(kind, m, ts, ts);
        }
    }
    for (meter, c) in out.commands {
        if let Command::Resend { from, to } = c.command {
            push(FaultType::Gap, meter, from, to - dt);
        }
    }
    for a in out.aggregates {
        if let Aggregate::MeterWindow(w) = a
            && w.window == Width::Interval
            && w.rules.contains(&Rule::Outage)
        {
            push(FaultType::MeterOutage, &w.meter_id, w.end, w.end);
        }
    }
    for a in out.alerts {
        let kind = match a.kind {
            AlertType::VoltageSag => FaultType::VoltageSag,
            AlertType::VoltageSwell => FaultType::VoltageSwell,
            AlertType::ReverseFlow => FaultType::ReverseFlow,
            AlertType::FeederOutage => FaultType::FeederOutage,
            // Less than forecast: a bypass; more: an appliance left on.
            AlertType::ConsumptionForecastDeviation => match a.evidence["direction"].as_str() {
                Some("under") => FaultType::Bypass,
                Some("over") => FaultType::ApplianceLeftOn,
                _ => continue,
            },
            _ => continue,
        };
        let subject = match kind {
            FaultType::FeederOutage => a.feeder.as_deref().unwrap_or_default(),
            _ => a.meter_id.as_deref().unwrap_or_default(),
        };
        match (a.event, a.kind, a.end) {
            // Deviations are found on whole hours: the first hour, then the stretch.
            (AlertEvent::Opened, AlertType::ConsumptionForecastDeviation, _) => {
                push(kind, subject, a.start, a.start + TimeDelta::hours(1));
            }
            (AlertEvent::Resolved, AlertType::ConsumptionForecastDeviation, Some(end)) => {
                push(kind, subject, a.start, end);
            }
            (AlertEvent::Opened, ..) => push(kind, subject, a.start, a.start),
            _ => {}
        }
    }
}

/// Merges findings of one type and subject that lie within two intervals of each other.
pub fn merge(mut findings: Vec<Finding>, dt: TimeDelta) -> Vec<Finding> {
    findings.sort_by(|a, b| (a.kind, &a.subject, a.start).cmp(&(b.kind, &b.subject, b.start)));
    let mut out: Vec<Finding> = Vec::new();
    for f in findings {
        if let Some(last) = out.last_mut()
            && last.kind == f.kind
            && last.subject == f.subject
            && f.start <= last.end + dt * 2
        {
            last.end = last.end.max(f.end);
            continue;
        }
        out.push(f);
    }
    out
}

/// Who a label is about: its meter, or its feeder for a feeder outage.
fn subject(l: &Label) -> &str {
    match l.kind {
        FaultType::FeederOutage => &l.feeder,
        _ => l.meter.as_deref().unwrap_or_default(),
    }
}

/// Whether finding `f` matches label `l`: same type and subject, times within two intervals.
fn overlaps(l: &Label, f: &Finding, dt: TimeDelta) -> bool {
    l.kind == f.kind
        && subject(l) == f.subject
        && f.start <= l.end + dt * 2
        && f.end >= l.start - dt * 2
}

/// Precision, recall and F1 of `findings` against `labels`, per fault type.
pub fn score(labels: &[Label], findings: &[Finding], dt: TimeDelta) -> BTreeMap<String, Score> {
    let overlaps = |l: &Label, f: &Finding| overlaps(l, f, dt);
    FaultType::ALL
        .into_iter()
        .map(|kind| {
            let ls: Vec<&Label> = labels.iter().filter(|l| l.kind == kind).collect();
            let fs: Vec<&Finding> = findings.iter().filter(|f| f.kind == kind).collect();
            let matched_labels = ls
                .iter()
                .filter(|l| fs.iter().any(|f| overlaps(l, f)))
                .count();
            let matched_findings = fs
                .iter()
                .filter(|f| ls.iter().any(|l| overlaps(l, f)))
                .count();
            let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
            let precision = ratio(matched_findings, fs.len());
            let recall = ratio(matched_labels, ls.len());
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            (
                kind.name().to_owned(),
                Score {
                    labels: ls.len(),
                    findings: fs.len(),
                    matched_labels,
                    matched_findings,
                    precision,
                    recall,
                    f1,
                },
            )
        })
        .collect()
}

/// Findings that match no label and labels no finding matched, one line each.
pub fn misses(labels: &[Label], findings: &[Finding], dt: TimeDelta) -> Vec<String> {
    let overlaps = |l: &Label, f: &Finding| overlaps(l, f, dt);
    let mut out = Vec::new();
    for f in findings
        .iter()
        .filter(|f| !labels.iter().any(|l| overlaps(l, f)))
    {
        out.push(format!(
            "finding without label: {} {} {}..{}",
            f.kind.name(),
            f.subject,
            f.start,
            f.end
        ));
    }
    for l in labels
        .iter()
        .filter(|l| !findings.iter().any(|f| overlaps(l, f)))
    {
        out.push(format!(
            "label without finding: {} {} {}..{} {}",
            l.kind.name(),
            subject(l),
            l.start,
            l.end,
            l.params
        ));
    }
    out
}
