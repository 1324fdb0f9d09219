//! Per-metric recommendations: the HPA formula `ceil(current × value / target)`, with its
//! tolerance band and its rules for missing metrics and instances that are not ready.
//!
//! Two kinds of metric (see [`Metric::is_total`]):
//!
//! - **load** (`concurrency` incl. the gateway queue, `rps`, `queue_depth`): the total over all
//!   instances divided by the target. Starting and warming instances count toward capacity
//!   (`current`) but cannot dilute the figure, because the load is the load wherever it is served.
//! - **per-instance** (`cpu`, `memory`, `latency_p95`, `error_rate`): averaged over *measured*
//!   instances (ready and warmed up). When that average asks for more, instances that are not
//!   measured count as 0 % of the target (HPA's not-ready rule, AWS's warmup); when it asks for
//!   fewer, ready instances without a value count as 100 % (HPA's missing-metric rule).

use herd_config::{Metric, MetricTarget};

use crate::decision::MetricRecommendation;
use crate::observation::{InstanceSample, Observation};

/// Below this, a ratio is considered on target when comparing floats.
const EPS: f64 = 1e-9;

/// `ceil` that tolerates float noise just above an integer, saturating into u32.
pub(crate) fn ceil_u32(v: f64) -> u32 {
    if !v.is_finite() || v <= 0.0 {
        return 0;
    }
    let c = (v - EPS).ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // Non-negative and below u32::MAX: exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let c = c.max(0.0) as u32;
        c
    }
}

/// The value of a per-instance metric for one instance, if it has one.
pub(crate) fn instance_value(metric: Metric, i: &InstanceSample) -> Option<f64> {
    // Byte counts are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    match metric {
        Metric::Concurrency => Some(i.in_flight),
        Metric::Rps => Some(i.rps),
        Metric::Cpu => Some(i.cpu_percent),
        Metric::Memory => Some(i.rss_bytes as f64),
        Metric::MemoryPercent => i
            .memory_limit
            .filter(|l| *l > 0)
            .map(|l| i.rss_bytes as f64 * 100.0 / l as f64),
        Metric::LatencyP95 => i.latency_p95_ms,
        Metric::QueueDepth => None,
        Metric::ErrorRate => Some(i.error_rate),
    }
    .filter(|v| v.is_finite())
}

/// A load metric's total over the app.
pub(crate) fn total(metric: Metric, obs: &Observation) -> f64 {
    let sum = |f: fn(&InstanceSample) -> f64| -> f64 {
        obs.instances.iter().map(f).filter(|v| v.is_finite()).sum()
    };
    let queue = if obs.queue_depth.is_finite() {
        obs.queue_depth.max(0.0)
    } else {
        0.0
    };
    match metric {
        Metric::Concurrency => sum(|i| i.in_flight.max(0.0)) + queue,
        Metric::Rps => sum(|i| i.rps.max(0.0)),
        Metric::QueueDepth => queue,
        _ => 0.0,
    }
}

/// The per-instance value rules compare with: total ÷ ready for load metrics, the average over
/// measured instances otherwise.
pub(crate) fn per_instance(metric: Metric, obs: &Observation, warming: &[bool]) -> Option<f64> {
    if metric.is_total() {
        return Some(total(metric, obs) / f64::from(obs.ready().max(1)));
    }
    let (sum, n) = measured(metric, obs, warming);
    (n > 0).then(|| sum / f64::from(n))
}

fn measured(metric: Metric, obs: &Observation, warming: &[bool]) -> (f64, u32) {
    let mut sum = 0.0;
    let mut n = 0u32;
    for (i, inst) in obs.instances.iter().enumerate() {
        if !inst.ready || warming.get(i).copied().unwrap_or(false) {
            continue;
        }
        if let Some(v) = instance_value(metric, inst) {
            sum += v;
            n += 1;
        }
    }
    (sum, n)
}

/// One target's recommendation. `warming[i]` says whether `obs.instances[i]` is warming up.
pub(crate) fn recommend(
    t: &MetricTarget,
    obs: &Observation,
    warming: &[bool],
    tolerance: f64,
) -> MetricRecommendation {
    let current = obs.current;
    let ready = obs.ready();
    if t.metric.is_total() {
        let total = total(t.metric, obs);
        let demand = total / t.value;
        let ratio = if current == 0 {
            f64::INFINITY
        } else {
            demand / f64::from(current)
        };
        let recommended = if current > 0 && (ratio - 1.0).abs() <= tolerance + EPS {
            current
        } else {
            ceil_u32(demand)
        };
        return MetricRecommendation {
            metric: t.metric.name().to_owned(),
            value: total / f64::from(ready.max(1)),
            target: t.value,
            demand,
            ratio: if ratio.is_finite() { ratio } else { 0.0 },
            recommended: Some(recommended),
        };
    }

    let (sum, n) = measured(t.metric, obs, warming);
    if n == 0 {
        return MetricRecommendation::missing(t.metric, t.value);
    }
    let avg = sum / f64::from(n);
    let usage = avg / t.value;
    let base = |demand: f64, count: u32| MetricRecommendation {
        metric: t.metric.name().to_owned(),
        value: avg,
        target: t.value,
        demand,
        ratio: if count == 0 {
            0.0
        } else {
            demand / f64::from(count)
        },
        recommended: Some(current),
    };
    if (usage - 1.0).abs() <= tolerance + EPS || current == 0 {
        return base(usage * f64::from(n), n.max(current));
    }
    if usage > 1.0 {
        // Scale up: instances not measured (starting, warming, no value) count as 0 %.
        let demand = sum / t.value;
        let mut rec = base(demand, current);
        if rec.ratio > 1.0 + tolerance + EPS {
            rec.recommended = Some(ceil_u32(demand));
        }
        rec
    } else {
        // Scale down: ready instances without a value count as 100 %; starting ones are ignored.
        let missing = obs
            .instances
            .iter()
            .enumerate()
            .filter(|(i, inst)| {
                inst.ready
                    && !warming.get(*i).copied().unwrap_or(false)
                    && instance_value(t.metric, inst).is_none()
            })
            .count();
        let missing = u32::try_from(missing).unwrap_or(u32::MAX);
        let demand = (sum + f64::from(missing) * t.value) / t.value;
        let count = n.saturating_add(missing);
        let mut rec = base(demand, count);
        if rec.ratio < 1.0 - tolerance - EPS {
            rec.recommended = Some(ceil_u32(demand));
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, ready: bool, in_flight: f64, cpu: f64) -> InstanceSample {
        InstanceSample {
            id: id.into(),
            ready,
            age_ms: 60_000,
            in_flight,
            rps: in_flight * 10.0,
            cpu_percent: cpu,
            ..InstanceSample::default()
        }
    }

    fn obs(instances: Vec<InstanceSample>, queue: f64) -> Observation {
        Observation {
            current: u32::try_from(instances.len()).unwrap(),
            instances,
            queue_depth: queue,
            ..Observation::default()
        }
    }

    fn target(metric: Metric, value: f64) -> MetricTarget {
        MetricTarget { metric, value }
    }

    #[test]
    fn load_metrics_are_total_over_target() {
        let o = obs(
            vec![inst("a", true, 30.0, 0.0), inst("b", true, 30.0, 0.0)],
            20.0,
        );
        let r = recommend(&target(Metric::Concurrency, 10.0), &o, &[false, false], 0.1);
        assert_eq!(r.recommended, Some(8), "(30 + 30 + 20) / 10");
        assert!((r.value - 40.0).abs() < 1e-9);
        let r = recommend(&target(Metric::Rps, 100.0), &o, &[false, false], 0.1);
        assert_eq!(r.recommended, Some(6));
        let r = recommend(&target(Metric::QueueDepth, 5.0), &o, &[false, false], 0.1);
        assert_eq!(r.recommended, Some(4));
    }

    #[test]
    fn tolerance_band_keeps_the_count() {
        let o = obs(
            vec![inst("a", true, 10.5, 0.0), inst("b", true, 10.5, 0.0)],
            0.0,
        );
        let r = recommend(&target(Metric::Concurrency, 10.0), &o, &[false, false], 0.1);
        assert_eq!(r.recommended, Some(2), "ratio 1.05 is within 0.1");
        let r = recommend(&target(Metric::Concurrency, 10.0), &o, &[false, false], 0.0);
        assert_eq!(r.recommended, Some(3));
    }

    #[test]
    fn starting_instances_count_toward_capacity() {
        let o = obs(
            vec![inst("a", true, 19.0, 0.0), inst("b", false, 0.0, 0.0)],
            0.0,
        );
        let r = recommend(&target(Metric::Concurrency, 10.0), &o, &[false, true], 0.1);
        assert_eq!(r.recommended, Some(2), "19/10 → 2, which already exist");
    }

    #[test]
    fn not_measured_instances_count_as_zero_on_scale_up() {
        // One measured instance at 140 % of target, one warming: HPA counts the warming one as 0 %,
        // so the usage ratio is 0.7 × 2 = 1.4 / 2 → 0.7 < 1: no scale-up.
        let o = obs(
            vec![inst("a", true, 0.0, 140.0), inst("b", true, 0.0, 10.0)],
            0.0,
        );
        let r = recommend(&target(Metric::Cpu, 100.0), &o, &[false, true], 0.1);
        assert_eq!(r.recommended, Some(2));
        // Both measured: 150 % average → 3.
        let o = obs(
            vec![inst("a", true, 0.0, 140.0), inst("b", true, 0.0, 160.0)],
            0.0,
        );
        let r = recommend(&target(Metric::Cpu, 100.0), &o, &[false, false], 0.1);
        assert_eq!(r.recommended, Some(3));
    }

    #[test]
    fn missing_values_count_as_full_on_scale_down() {
        let mut a = inst("a", true, 0.0, 0.0);
        a.latency_p95_ms = Some(50.0);
        let b = inst("b", true, 0.0, 0.0); // no latency figure
        let o = obs(vec![a, b], 0.0);
        let r = recommend(&target(Metric::LatencyP95, 200.0), &o, &[false, false], 0.1);
        // (50 + 200) / 200 = 1.25 → 2: the instance without a figure keeps the count up.
        assert_eq!(r.recommended, Some(2));
        let none = obs(vec![inst("a", true, 0.0, 0.0)], 0.0);
        let r = recommend(&target(Metric::LatencyP95, 200.0), &none, &[false], 0.1);
        assert_eq!(r.recommended, None);
    }

    #[test]
    fn ceil_ignores_float_noise() {
        assert_eq!(ceil_u32(3.000_000_000_01), 3);
        assert_eq!(ceil_u32(3.01), 4);
        assert_eq!(ceil_u32(0.0), 0);
        assert_eq!(ceil_u32(f64::NAN), 0);
        assert_eq!(ceil_u32(1e20), u32::MAX);
    }
}
