//! [`AlertEngine`]: every rule on every app it watches, evaluated on each telemetry sample.
//! Pure and synchronous: the caller owns the clock (each sample carries its time) and the I/O.

use std::collections::HashMap;

use herd_config::AlertRule;
use herd_core::telemetry::{AppSample, Sample};

use crate::summary::{self, Resolution};
use crate::track::{Change, Track};
use crate::types::{AlertStatus, Notification, NotificationState, Severity};

/// The alert rules in force and the state of each (rule, app) pair.
///
/// A rule with an `app` watches that app; one without watches every app in `apps` and any
/// other app that shows up in a sample. `Send`, so a telemetry task can own it.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    /// Apps in the order `status` lists them: those given, then those first seen in samples.
    apps: Vec<String>,
    /// Sorted by (rule, app order).
    tracks: Vec<Track>,
}

impl AlertEngine {
    /// An engine for `rules` (`Config::alerts.rules`) on `apps` (the configured app names, in
    /// order). Every alert starts inactive.
    #[must_use]
    pub fn new(rules: &[AlertRule], apps: &[String]) -> Self {
        let mut engine = AlertEngine {
            rules: rules.to_vec(),
            apps: Vec::new(),
            tracks: Vec::new(),
        };
        for app in apps {
            engine.add_app(app);
        }
        for (i, rule) in rules.iter().enumerate() {
            if let Some(app) = &rule.app {
                engine.add_app(app);
                engine.ensure(i, app);
            }
        }
        engine.sort();
        engine
    }

    /// The rules in force.
    #[must_use]
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Evaluates every alert on `sample` and returns the notifications of those whose state or
    /// severity changed, in status order. An app a rule watches but the sample lacks counts as
    /// a missing value; so does a NaN or infinite value.
    pub fn evaluate(&mut self, sample: &Sample) -> Vec<Notification> {
        let t = sample.at_unix_ms;
        let mut by_app: HashMap<&str, &AppSample> = HashMap::with_capacity(sample.apps.len());
        for app in &sample.apps {
            by_app.entry(app.app.as_str()).or_insert(app);
        }
        let new_apps: Vec<&str> = sample
            .apps
            .iter()
            .map(|a| a.app.as_str())
            .filter(|a| !self.apps.iter().any(|known| known == a))
            .collect();
        if !new_apps.is_empty() {
            for app in new_apps {
                self.add_app(app);
            }
            self.sort();
        }

        let mut out = Vec::new();
        for track in &mut self.tracks {
            let rule = &self.rules[track.rule];
            let value = by_app
                .get(track.app.as_str())
                .and_then(|a| a.metric(rule.metric.name()));
            if let Some(change) = track.step(rule, t, value) {
                out.push(notification(rule, track, change, t));
            }
        }
        out
    }

    /// Every alert's current state, by rule (in config order), then app.
    #[must_use]
    pub fn status(&self) -> Vec<AlertStatus> {
        self.tracks
            .iter()
            .map(|t| t.status(&self.rules[t.rule]))
            .collect()
    }

    /// Switches to new rules and apps (a config reload) at `at_unix_ms`. An alert whose rule
    /// keeps its name, metric and direction, on an app it still watches, keeps its state (new
    /// thresholds apply from the next sample). Others are dropped; those that were firing
    /// resolve, and their notifications are returned.
    pub fn reload(
        &mut self,
        rules: &[AlertRule],
        apps: &[String],
        at_unix_ms: i64,
    ) -> Vec<Notification> {
        let mut next = AlertEngine::new(rules, apps);
        let mut out = Vec::new();
        for mut track in std::mem::take(&mut self.tracks) {
            let old = &self.rules[track.rule];
            let kept = next.rules.iter().position(|r| {
                r.name == old.name
                    && r.metric == old.metric
                    && r.below == old.below
                    && r.app
                        .as_ref()
                        .map_or(apps.contains(&track.app), |a| *a == track.app)
            });
            match kept {
                Some(i) => {
                    track.rule = i;
                    if let Some(slot) = next
                        .tracks
                        .iter_mut()
                        .find(|t| t.rule == i && t.app == track.app)
                    {
                        *slot = track;
                    }
                }
                None => {
                    if let Some(change) = track.remove() {
                        out.push(notification(old, &track, change, at_unix_ms));
                    }
                }
            }
        }
        *self = next;
        out
    }

    /// herd is shutting down at `at_unix_ms`: every firing alert resolves (its notification
    /// says why), so no incident stays open at a receiver that no herd will ever close.
    pub fn stop(&mut self, at_unix_ms: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        for track in &mut self.tracks {
            if let Some(change) = track.end(Resolution::Stopped) {
                out.push(notification(
                    &self.rules[track.rule],
                    track,
                    change,
                    at_unix_ms,
                ));
            }
        }
        out
    }

    fn add_app(&mut self, app: &str) {
        if self.apps.iter().any(|a| a == app) {
            return;
        }
        self.apps.push(app.to_owned());
        for i in 0..self.rules.len() {
            if self.rules[i].app.is_none() {
                self.ensure(i, app);
            }
        }
    }

    fn ensure(&mut self, rule: usize, app: &str) {
        if !self.tracks.iter().any(|t| t.rule == rule && t.app == app) {
            self.tracks.push(Track::new(rule, app.to_owned()));
        }
    }

    fn sort(&mut self) {
        let order: HashMap<&str, usize> = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i))
            .collect();
        self.tracks.sort_by_key(|t| {
            (
                t.rule,
                order.get(t.app.as_str()).copied().unwrap_or(usize::MAX),
            )
        });
    }
}

fn notification(rule: &AlertRule, track: &Track, change: Change, t: i64) -> Notification {
    let value = match change {
        Change::Resolved {
            why: Resolution::Removed | Resolution::Stopped,
            ..
        } => None,
        _ => track.value(),
    };
    let (state, severity, previous, since, summary) = match change {
        Change::Fired {
            severity,
            previous,
            since,
        } => (
            NotificationState::Firing,
            severity,
            previous,
            since,
            // A change to firing always comes from a sample with a value.
            summary::firing(
                rule,
                &track.app,
                value.unwrap_or(f64::NAN),
                severity,
                previous,
            ),
        ),
        Change::Resolved {
            severity,
            since,
            why,
        } => (
            NotificationState::Resolved,
            severity,
            None,
            since,
            summary::resolved(rule, &track.app, value, t.saturating_sub(since), why),
        ),
    };
    Notification {
        alert: rule.name.clone(),
        app: track.app.clone(),
        metric: rule.metric.name(),
        state,
        severity,
        previous,
        value,
        threshold: rule
            .threshold(severity == Severity::Critical)
            .unwrap_or(f64::NAN),
        since_unix_ms: since,
        at_unix_ms: t,
        summary,
    }
}

#[cfg(test)]
mod tests;
