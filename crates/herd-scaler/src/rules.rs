//! `[[app.scaling.rule]]`: seed-style threshold rules. A rule fires when its metric has been
//! above `above` (below `below`) for `for`, asking for `step` more (fewer) instances than there
//! are. When the count then moves its way, it waits `cooldown` before it can fire again (a
//! firing that changes nothing, held back or clamped by `min`/`max`, starts no cooldown:
//! AWS's cooldown follows a scaling activity). Rules bypass the stabilization
//! windows (they have their own `for` and cooldown) and are combined with the target metrics by
//! taking the largest recommendation.

use herd_config::{Metric, Rule};

use crate::decision::Direction;

#[derive(Debug, Default, Clone)]
pub(crate) struct RuleState {
    above_since: Option<u64>,
    below_since: Option<u64>,
    last_fired: Option<u64>,
}

/// A rule's metric this tick, per instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Values {
    /// Compared with `above`. For proportional metrics the load is spread over every instance,
    /// starting ones included, so that a rule does not fire again for capacity it has already
    /// asked for.
    pub(crate) up: f64,
    /// Compared with `below`: over the ready instances only (HPA ignores instances that are not
    /// ready when scaling down).
    pub(crate) down: f64,
}

impl Values {
    pub(crate) fn same(v: f64) -> Values {
        Values { up: v, down: v }
    }
}

/// A rule that fired this tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fired {
    pub(crate) index: usize,
    pub(crate) recommended: u32,
    pub(crate) value: f64,
    pub(crate) threshold: f64,
    pub(crate) direction: Direction,
}

impl RuleState {
    /// Updates the rule with this tick's values and returns a recommendation if it fires. A
    /// firing goes on each tick, while the condition holds, until [`RuleState::acted`].
    pub(crate) fn evaluate(
        &mut self,
        index: usize,
        rule: &Rule,
        now_ms: u64,
        values: Option<Values>,
        current: u32,
    ) -> Option<Fired> {
        let Some(values) = values else {
            self.above_since = None;
            self.below_since = None;
            return None;
        };
        let over = rule.above.is_some_and(|a| values.up > a);
        let under = rule.below.is_some_and(|b| values.down < b);
        self.above_since = if over {
            Some(self.above_since.unwrap_or(now_ms))
        } else {
            None
        };
        self.below_since = if under {
            Some(self.below_since.unwrap_or(now_ms))
        } else {
            None
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cooled = self
            .last_fired
            .is_none_or(|t| now_ms.saturating_sub(t) >= ms(rule.cooldown));
        if !cooled {
            return None;
        }
        let held = |since: Option<u64>| {
            since.is_some_and(|s| now_ms.saturating_sub(s) >= ms(rule.sustain))
        };
        let fired = if held(self.above_since) {
            Fired {
                index,
                recommended: current.saturating_add(rule.step),
                value: values.up,
                threshold: rule.above?,
                direction: Direction::Up,
            }
        } else if held(self.below_since) {
            Fired {
                index,
                recommended: current.saturating_sub(rule.step),
                value: values.down,
                threshold: rule.below?,
                direction: Direction::Down,
            }
        } else {
            return None;
        };
        Some(fired)
    }

    /// The count moved the way this rule's firing asked: its cooldown starts, and its
    /// condition must hold for `for` again.
    pub(crate) fn acted(&mut self, now_ms: u64) {
        self.last_fired = Some(now_ms);
        self.above_since = None;
        self.below_since = None;
    }
}

/// Whether a metric's per-instance value scales as load ÷ instances, so that the value after a
/// change of count can be projected.
pub(crate) fn proportional(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::Concurrency | Metric::Rps | Metric::QueueDepth | Metric::Cpu
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule() -> Rule {
        Rule {
            metric: Metric::Cpu,
            above: Some(80.0),
            below: Some(20.0),
            sustain: Duration::from_secs(10),
            step: 2,
            cooldown: Duration::from_secs(60),
        }
    }

    #[test]
    fn fires_after_for_then_cools_down() {
        let r = rule();
        let mut s = RuleState::default();
        assert_eq!(s.evaluate(0, &r, 0, Some(Values::same(90.0)), 3), None);
        assert_eq!(s.evaluate(0, &r, 5_000, Some(Values::same(90.0)), 3), None);
        let f = s
            .evaluate(0, &r, 10_000, Some(Values::same(90.0)), 3)
            .unwrap();
        assert_eq!((f.recommended, f.direction), (5, Direction::Up));
        s.acted(10_000);
        for t in (11..70).map(|s| s * 1000) {
            assert_eq!(
                s.evaluate(0, &r, t, Some(Values::same(95.0)), 5),
                None,
                "cooldown at {t}"
            );
        }
        assert!(s
            .evaluate(0, &r, 70_000, Some(Values::same(95.0)), 5)
            .is_some());
    }

    #[test]
    fn a_firing_that_changed_nothing_starts_no_cooldown() {
        let r = rule();
        let mut s = RuleState::default();
        s.evaluate(0, &r, 0, Some(Values::same(10.0)), 1);
        for t in (10..20).map(|s| s * 1000) {
            let f = s.evaluate(0, &r, t, Some(Values::same(10.0)), 1);
            assert_eq!(f.map(|f| f.direction), Some(Direction::Down), "at {t}");
        }
        // Hot now: the `for` of the other side, and no cooldown in the way.
        assert_eq!(s.evaluate(0, &r, 20_000, Some(Values::same(90.0)), 1), None);
        let f = s.evaluate(0, &r, 30_000, Some(Values::same(90.0)), 1);
        assert_eq!(f.map(|f| f.recommended), Some(3));
    }

    #[test]
    fn a_dip_resets_the_for_timer() {
        let r = rule();
        let mut s = RuleState::default();
        s.evaluate(0, &r, 0, Some(Values::same(90.0)), 3);
        s.evaluate(0, &r, 6_000, Some(Values::same(50.0)), 3);
        assert_eq!(s.evaluate(0, &r, 10_000, Some(Values::same(90.0)), 3), None);
        let f = s.evaluate(0, &r, 30_000, Some(Values::same(10.0)), 3);
        assert_eq!(f, None);
        let f = s
            .evaluate(0, &r, 40_000, Some(Values::same(10.0)), 3)
            .unwrap();
        assert_eq!((f.recommended, f.direction), (1, Direction::Down));
    }
}
