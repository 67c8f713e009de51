//! The life of an alert, free of I/O: a rule's condition holds for a series (one sensor of one
//! node) → *pending*; held for the rule's `for_secs` → *firing* (notified); acknowledged by an
//! operator → still firing, *acknowledged* (notified); the condition stops holding →
//! *resolved* (notified, forgotten). A pending alert whose condition stops holding is forgotten
//! unnotified.
//!
//! Invariants: at most one alert per (rule, series) at a time; an alert's id names its rule,
//! series and the time it started firing, so it is the same in every notification about it and
//! across restarts (the firing set is saved and restored, see [`Tracker::snapshot`]); each
//! transition is reported exactly once by [`Tracker::step`] or [`Tracker::acknowledge`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One series a rule watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Series {
    pub network: String,
    pub node_id: String,
    pub sensor: String,
}

/// An alert as notifications and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{rule}/{network}/{node_id}/{sensor}/{started_ms}`.
    pub id: String,
    pub rule: String,
    /// The rule's label: `info`, `warning`, `critical`.
    pub severity: String,
    #[serde(flatten)]
    pub series: Series,
    /// The value that made it fire (or resolve), where the series has one.
    pub value: Option<f64>,
    pub started_ms: i64,
    pub resolved_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    /// One line for humans: the rule's condition and the series.
    pub summary: String,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Firing,
    Acknowledged,
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Firing => "firing",
            Change::Acknowledged => "acknowledged",
            Change::Resolved => "resolved",
        }
    }
}

/// A transition to notify.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub change: Change,
    pub alert: Alert,
}

/// What a rule is, as far as the state machine cares.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub severity: String,
    pub for_ms: i64,
    /// The condition as written, for summaries.
    pub when: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Phase {
    Pending { since_ms: i64 },
    Firing(Box<Alert>),
}

/// The alerts of every rule: pending and firing.
#[derive(Debug, Default)]
pub struct Tracker {
    active: BTreeMap<(String, Series), Phase>,
}

impl Tracker {
    /// A tracker that knows the alerts `firing` (as saved by [`Tracker::snapshot`]), so a
    /// restart neither notifies them again nor forgets to resolve them.
    pub fn restore(firing: Vec<Alert>) -> Tracker {
        Tracker {
            active: firing
                .into_iter()
                .map(|a| {
                    (
                        (a.rule.clone(), a.series.clone()),
                        Phase::Firing(Box::new(a)),
                    )
                })
                .collect(),
        }
    }

    /// The firing alerts, to save.
    pub fn snapshot(&self) -> Vec<Alert> {
        self.firing().cloned().collect()
    }

    /// The firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().filter_map(|p| match p {
            Phase::Firing(a) => Some(a.as_ref()),
            Phase::Pending { .. } => None,
        })
    }

    /// One evaluation of `rule` at `now_ms`: `matching` are the series its condition holds for
    /// now, with their values; `unknown` are series with no reading since this process
    /// started, whose firing alerts are kept rather than resolved on no evidence. Returns what
    /// changed.
    pub fn step(
        &mut self,
        rule: &RuleSpec,
        now_ms: i64,
        matching: &[(Series, Option<f64>)],
        unknown: &BTreeSet<Series>,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let holding: BTreeSet<&Series> = matching.iter().map(|(s, _)| s).collect();
        for (series, value) in matching {
            let key = (rule.name.clone(), series.clone());
            let phase = self
                .active
                .entry(key)
                .or_insert(Phase::Pending { since_ms: now_ms });
            if let Phase::Pending { since_ms } = *phase
                && now_ms - since_ms >= rule.for_ms
            {
                let alert = Alert {
                    id: format!(
                        "{}/{}/{}/{}/{now_ms}",
                        rule.name, series.network, series.node_id, series.sensor
                    ),
                    rule: rule.name.clone(),
                    severity: rule.severity.clone(),
                    series: series.clone(),
                    value: *value,
                    started_ms: now_ms,
                    resolved_ms: None,
                    acknowledged_by: None,
                    summary: format!(
                        "{}: {} of {} on {} ({})",
                        rule.name, series.sensor, series.node_id, series.network, rule.when
                    ),
                };
                out.push(Transition {
                    change: Change::Firing,
                    alert: alert.clone(),
                });
                *phase = Phase::Firing(Box::new(alert));
            }
        }
        let gone: Vec<(String, Series)> = self
            .active
            .keys()
            .filter(|(r, s)| *r == rule.name && !holding.contains(s))
            .cloned()
            .collect();
        for key in gone {
            if matches!(self.active.get(&key), Some(Phase::Firing(_))) && unknown.contains(&key.1) {
                continue;
            }
            out.extend(self.end(&key, now_ms));
        }
        out
    }

    /// Forgets the alert of `key`: its resolution when it was firing.
    fn end(&mut self, key: &(String, Series), now_ms: i64) -> Option<Transition> {
        let Some(Phase::Firing(mut alert)) = self.active.remove(key) else {
            return None;
        };
        alert.resolved_ms = Some(now_ms);
        Some(Transition {
            change: Change::Resolved,
            alert: *alert,
        })
    }

    /// Forgets the alerts of rules no longer configured, resolving the firing ones.
    pub fn retain_rules(&mut self, rules: &[RuleSpec], now_ms: i64) -> Vec<Transition> {
        let known: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<(String, Series)> = self
            .active
            .keys()
            .filter(|(r, _)| !known.contains(r.as_str()))
            .cloned()
            .collect();
        gone.iter()
            .filter_map(|key| self.end(key, now_ms))
            .collect()
    }

    /// `by` acknowledges the firing alert `id`; `None` when no such alert fires or it was
    /// acknowledged already.
    pub fn acknowledge(&mut self, id: &str, by: &str) -> Option<Transition> {
        self.active.values_mut().find_map(|p| match p {
            Phase::Firing(a) if a.id == id && a.acknowledged_by.is_none() => {
                a.acknowledged_by = Some(by.to_owned());
                Some(Transition {
                    change: Change::Acknowledged,
                    alert: a.as_ref().clone(),
                })
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_ms: i64) -> RuleSpec {
        RuleSpec {
            name: "hot".into(),
            severity: "warning".into(),
            for_ms,
            when: "value > 45".into(),
        }
    }

    fn series(node: &str) -> Series {
        Series {
            network: "net".into(),
            node_id: node.into(),
            sensor: "temp".into(),
        }
    }

    fn changes(t: &[Transition]) -> Vec<(Change, &str)> {
        t.iter()
            .map(|t| (t.change, t.alert.series.node_id.as_str()))
            .collect()
    }

    #[test]
    fn fires_once_resolves_once() {
        let mut t = Tracker::default();
        let r = rule(0);
        let fired = t.step(&r, 1000, &[(series("a"), Some(50.0))], &BTreeSet::new());
        assert_eq!(changes(&fired), [(Change::Firing, "a")]);
        assert_eq!(fired[0].alert.id, "hot/net/a/temp/1000");
        assert!(
            t.step(&r, 2000, &[(series("a"), Some(51.0))], &BTreeSet::new())
                .is_empty()
        );
        let resolved = t.step(&r, 3000, &[], &BTreeSet::new());
        assert_eq!(changes(&resolved), [(Change::Resolved, "a")]);
        assert_eq!(resolved[0].alert.id, "hot/net/a/temp/1000");
        assert_eq!(resolved[0].alert.resolved_ms, Some(3000));
        assert!(t.step(&r, 4000, &[], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn waits_for_its_hold_time_and_forgets_a_blip() {
        let mut t = Tracker::default();
        let r = rule(5000);
        assert!(
            t.step(&r, 0, &[(series("a"), None)], &BTreeSet::new())
                .is_empty()
        );
        assert!(
            t.step(&r, 1000, &[], &BTreeSet::new()).is_empty(),
            "a blip is never notified"
        );
        assert!(
            t.step(&r, 2000, &[(series("a"), None)], &BTreeSet::new())
                .is_empty()
        );
        assert!(
            t.step(&r, 6000, &[(series("a"), None)], &BTreeSet::new())
                .is_empty()
        );
        let fired = t.step(&r, 7000, &[(series("a"), None)], &BTreeSet::new());
        assert_eq!(changes(&fired), [(Change::Firing, "a")]);
    }

    #[test]
    fn acknowledged_once_and_restored_without_a_second_notification() {
        let mut t = Tracker::default();
        let r = rule(0);
        let id = t.step(&r, 1000, &[(series("a"), Some(50.0))], &BTreeSet::new())[0]
            .alert
            .id
            .clone();
        let ack = t.acknowledge(&id, "ops").unwrap();
        assert_eq!(ack.change, Change::Acknowledged);
        assert_eq!(ack.alert.acknowledged_by.as_deref(), Some("ops"));
        assert!(t.acknowledge(&id, "ops").is_none());
        assert!(t.acknowledge("nope", "ops").is_none());

        let mut restored = Tracker::restore(t.snapshot());
        let unknown = BTreeSet::from([series("a")]);
        assert!(
            restored.step(&r, 1500, &[], &unknown).is_empty(),
            "no reading since the restart: not resolved on no evidence"
        );
        assert!(
            restored
                .step(&r, 2000, &[(series("a"), Some(50.0))], &BTreeSet::new())
                .is_empty()
        );
        let resolved = restored.step(&r, 3000, &[], &BTreeSet::new());
        assert_eq!(resolved[0].alert.id, id);
        assert_eq!(resolved[0].alert.acknowledged_by.as_deref(), Some("ops"));
    }

    #[test]
    fn rules_are_independent_and_removed_rules_resolve() {
        let mut t = Tracker::default();
        let hot = rule(0);
        let silent = RuleSpec {
            name: "silent".into(),
            ..rule(0)
        };
        t.step(&hot, 0, &[(series("a"), None)], &BTreeSet::new());
        t.step(&silent, 0, &[(series("a"), None)], &BTreeSet::new());
        assert_eq!(t.firing().count(), 2);
        assert!(
            t.step(&hot, 1, &[(series("a"), None)], &BTreeSet::new())
                .is_empty()
        );
        let resolved = t.retain_rules(std::slice::from_ref(&hot), 2);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].alert.rule, "silent");
        assert_eq!(t.firing().count(), 1);
    }
}
