//! The JSON form of a job, as `POST /v1/queues/{q}/jobs` and schedules take it. Durations are
//! text (`"30s"`, `"250ms"`); `remove_on_complete` / `remove_on_fail` take `true`, `false`, a
//! count to keep, or `{"count": N, "age": SECONDS|"1h"}` (BullMQ's `KeepJobs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::job::{Backoff, BackoffKind, Keep, NewJob, MAX_PRIORITY};
use crate::error::{ServiceError, ServiceResult};

/// A job as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::object::opt"
    )]
    pub backoff: Option<BackoffSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_complete: Option<KeepSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_fail: Option<KeepSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifo: Option<bool>,
}

/// `{"type": "fixed"|"exponential", "delay": "1s", "jitter": 0.5}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    pub delay: DelaySpec,
    #[serde(default)]
    pub jitter: f64,
}

/// A job's `delay` or `backoff.delay`: a duration text (`"250ms"`) or, as BullMQ takes it, a
/// number of milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DelaySpec {
    Millis(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for DelaySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = DelaySpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a duration such as \"250ms\" or a whole number of milliseconds (0 or more)",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DelaySpec, E> {
                Ok(DelaySpec::Millis(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DelaySpec, E> {
                Ok(DelaySpec::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl DelaySpec {
    /// The duration; `field` names the option in errors.
    ///
    /// # Errors
    /// `Invalid` for a text that is not a duration, or one over ten years.
    pub fn duration(&self, field: &str) -> ServiceResult<std::time::Duration> {
        match self {
            DelaySpec::Text(t) => duration(field, t),
            DelaySpec::Millis(ms) => {
                let d = std::time::Duration::from_millis(*ms);
                if d > MAX_DURATION {
                    return Err(ServiceError::invalid(
                        field,
                        format!("{ms} milliseconds is longer than ten years"),
                        "use at most 315360000000 (or \"3650d\")",
                    ));
                }
                Ok(d)
            }
        }
    }
}

impl From<&str> for DelaySpec {
    fn from(text: &str) -> DelaySpec {
        DelaySpec::Text(text.to_owned())
    }
}

/// `true` (keep none), `false` (keep all), a count to keep, or BullMQ's `KeepJobs`
/// (`{"count": 100, "age": 3600}`: the newest 100, each for at most an hour after it finished;
/// `age` in seconds as BullMQ, or a duration such as `"1h"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KeepSpec {
    Flag(bool),
    Count(u64),
    Jobs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age: Option<AgeSpec>,
    },
}

/// A `KeepJobs` age: seconds (BullMQ) or a duration text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgeSpec {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepJobs {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    age: Option<AgeSpec>,
}

impl<'de> Deserialize<'de> for KeepSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = KeepSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "true (keep none), false (keep all), a count of jobs to keep (0 or more) or {\"count\": N, \"age\": SECONDS}",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KeepSpec, E> {
                Ok(KeepSpec::Flag(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeepSpec, E> {
                Ok(KeepSpec::Count(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<KeepSpec, A::Error> {
                let jobs =
                    KeepJobs::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(KeepSpec::Jobs {
                    count: jobs.count,
                    age: jobs.age,
                })
            }
        }
        d.deserialize_any(Visit)
    }
}

impl KeepSpec {
    /// What to keep; `field` names the option in errors.
    ///
    /// # Errors
    /// `Invalid` for `{}` and for an age that is not a duration of at most ten years.
    pub fn keep(&self, field: &str) -> ServiceResult<Keep> {
        Ok(match self {
            KeepSpec::Flag(false) => Keep::ALL,
            KeepSpec::Flag(true) => Keep::NONE,
            KeepSpec::Count(n) => Keep::count(*n),
            KeepSpec::Jobs { count, age } => {
                let age_ms = match age {
                    None => None,
                    Some(age) => {
                        let name = format!("{field}.age");
                        let d = match age {
                            AgeSpec::Seconds(s) => {
                                let d = std::time::Duration::from_secs(*s);
                                if d > MAX_DURATION {
                                    return Err(ServiceError::invalid(
                                        &name,
                                        format!("{s} seconds is longer than ten years"),
                                        "use at most 315360000 (or \"3650d\")",
                                    ));
                                }
                                d
                            }
                            AgeSpec::Text(t) => duration(&name, t)?,
                        };
                        Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    }
                };
                if count.is_none() && age_ms.is_none() {
                    return Err(ServiceError::invalid(
                        field,
                        "an empty object names neither a count nor an age",
                        "give {\"count\": N}, {\"age\": SECONDS} or both; false keeps every job",
                    ));
                }
                Keep {
                    count: *count,
                    age_ms,
                }
            }
        })
    }
}

/// The longest duration the services API takes (a TTL, a lease, a delay): ten years, so that
/// every deadline computed from one stays far inside the clock's range.
pub(crate) const MAX_DURATION: std::time::Duration =
    std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration such as `"30s"`, naming the field on error.
pub(crate) fn duration(field: &str, text: &str) -> ServiceResult<std::time::Duration> {
    let too_long = || {
        ServiceError::invalid(
            field,
            format!("{} is longer than ten years", crate::error::quoted(text)),
            "use at most \"3650d\"",
        )
    };
    let d = herd_config::parse_duration(text).map_err(|reason| {
        // The config's own ceiling (100 years) is not this API's: name this one.
        if reason.starts_with("duration is too large") {
            return too_long();
        }
        ServiceError::invalid(
            field,
            format!("{}: {reason}", crate::error::quoted(text)),
            "use a number with ms, s, m, h or d, e.g. \"30s\" or \"250ms\"",
        )
    })?;
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

impl JobSpec {
    /// The job this spec describes.
    ///
    /// # Errors
    /// `Invalid` durations, attempts, priority or jitter.
    pub fn to_new_job(&self) -> ServiceResult<NewJob> {
        let backoff = match &self.backoff {
            None => None,
            Some(b) => Some(Backoff {
                kind: b.kind,
                delay_ms: u64::try_from(b.delay.duration("backoff.delay")?.as_millis())
                    .unwrap_or(u64::MAX),
                jitter: b.jitter,
            }),
        };
        let job = NewJob {
            name: self.name.clone(),
            data: self.data.clone(),
            attempts: self.attempts.unwrap_or(1),
            backoff,
            delay: match &self.delay {
                Some(d) => d.duration("delay")?,
                None => std::time::Duration::ZERO,
            },
            priority: self.priority.unwrap_or(0),
            job_id: self.job_id.clone(),
            keep_completed: keep(self.remove_on_complete.as_ref(), "remove_on_complete")?,
            keep_failed: keep(self.remove_on_fail.as_ref(), "remove_on_fail")?,
            lifo: self.lifo.unwrap_or(false),
        };
        check_new_job(&job)?;
        Ok(job)
    }
}

fn keep(spec: Option<&KeepSpec>, field: &str) -> ServiceResult<Keep> {
    spec.map_or(Ok(Keep::ALL), |k| k.keep(field))
}

/// Checks the values a job may take.
pub(crate) fn check_new_job(job: &NewJob) -> ServiceResult<()> {
    if job.name.is_empty() || job.name.len() > 200 {
        return Err(ServiceError::invalid(
            "name",
            "a job name must be 1 to 200 bytes",
            "name the kind of work, e.g. \"send-email\"",
        ));
    }
    if job.attempts == 0 {
        return Err(ServiceError::invalid(
            "attempts",
            "attempts must be at least 1",
            "attempts counts deliveries including the first (BullMQ default 1)",
        ));
    }
    if job.lifo && job.priority > 0 {
        return Err(ServiceError::invalid(
            "lifo",
            "a job with a priority cannot also be lifo",
            "leave priority out (or 0) for a lifo job; prioritised jobs run by priority, then in the order added",
        ));
    }
    if job.priority > MAX_PRIORITY {
        return Err(ServiceError::invalid(
            "priority",
            format!("{} is above {MAX_PRIORITY}", job.priority),
            "use 1 (highest) to 2097152, or 0 for none",
        ));
    }
    if let Some(b) = &job.backoff {
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(ServiceError::invalid(
                "backoff.jitter",
                format!("{} is outside 0..1", b.jitter),
                "jitter is the fraction of the delay taken off at random, e.g. 0.5",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bullmq_style_options() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "email", "data": {"to": "a@b"}, "attempts": 3,
            "backoff": {"type": "exponential", "delay": "1s", "jitter": 0.2},
            "delay": "250ms", "priority": 5, "job_id": "x", "remove_on_complete": true,
            "remove_on_fail": 100
        }))
        .unwrap();
        let job = spec.to_new_job().unwrap();
        assert_eq!(job.attempts, 3);
        assert_eq!(job.backoff.unwrap().delay_ms, 1000);
        assert_eq!(job.delay, std::time::Duration::from_millis(250));
        assert_eq!(
            (job.keep_completed, job.keep_failed),
            (Keep::NONE, Keep::count(100))
        );
    }

    #[test]
    fn delays_take_milliseconds_as_bullmq() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "delay": 1500, "backoff": {"type": "fixed", "delay": 200}
        }))
        .unwrap();
        let job = spec.to_new_job().unwrap();
        assert_eq!(job.delay, std::time::Duration::from_millis(1500));
        assert_eq!(job.backoff.unwrap().delay_ms, 200);
        for (bad, said) in [
            (serde_json::json!(-1), "whole number of milliseconds"),
            (serde_json::json!(1.5), "whole number of milliseconds"),
            (serde_json::json!(true), "whole number of milliseconds"),
        ] {
            let e =
                serde_json::from_value::<JobSpec>(serde_json::json!({"name": "a", "delay": bad}))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(said), "{e}");
        }
        let far = serde_json::from_value::<JobSpec>(
            serde_json::json!({"name": "a", "delay": 400_000_000_000_u64}),
        )
        .unwrap()
        .to_new_job()
        .unwrap_err()
        .to_string();
        assert!(far.contains("ten years"), "{far}");
    }

    #[test]
    fn bad_values_say_which_field() {
        let bad = |v: serde_json::Value| {
            serde_json::from_value::<JobSpec>(v)
                .unwrap()
                .to_new_job()
                .unwrap_err()
                .to_string()
        };
        assert!(bad(serde_json::json!({"name": "a", "delay": "5"})).contains("delay"));
        assert!(bad(serde_json::json!({"name": "a", "attempts": 0})).contains("attempts"));
        assert!(bad(serde_json::json!({"name": "a", "priority": 3_000_000})).contains("priority"));
        assert!(
            serde_json::from_value::<JobSpec>(serde_json::json!({"name": "a", "atempts": 1}))
                .is_err()
        );
        let empty = bad(serde_json::json!({"name": "a", "remove_on_fail": {}}));
        assert!(
            empty.contains("remove_on_fail") && empty.contains("neither"),
            "{empty}"
        );
        let age = bad(serde_json::json!({"name": "a", "remove_on_complete": {"age": "soon"}}));
        assert!(age.contains("remove_on_complete.age"), "{age}");
        let far = bad(serde_json::json!({"name": "a", "remove_on_complete": {"age": 400_000_000}}));
        assert!(far.contains("ten years"), "{far}");
        // Past the config's own 100-year ceiling, the message is still this API's limit.
        let huge = bad(serde_json::json!({"name": "a", "delay": "100000d"}));
        assert!(
            huge.contains("longer than ten years") && !huge.contains("100 years"),
            "{huge}"
        );
        for refused in [
            serde_json::json!({"name": "a", "remove_on_complete": {"agee": 1}}),
            serde_json::json!({"name": "a", "remove_on_complete": [1, 2]}),
            serde_json::json!({"name": "a", "remove_on_complete": -1}),
        ] {
            assert!(serde_json::from_value::<JobSpec>(refused).is_err());
        }
    }

    #[test]
    fn keep_jobs_take_a_count_an_age_or_both() {
        let keep = |v: serde_json::Value| {
            let spec: JobSpec =
                serde_json::from_value(serde_json::json!({"name": "a", "remove_on_complete": v}))
                    .unwrap();
            // A spec survives being stored (schedules keep theirs as JSON).
            let again: JobSpec =
                serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
            assert_eq!(again, spec);
            spec.to_new_job().unwrap().keep_completed
        };
        let age = |count, age_ms| Keep {
            count,
            age_ms: Some(age_ms),
        };
        assert_eq!(keep(serde_json::json!({"age": 3600})), age(None, 3_600_000));
        assert_eq!(
            keep(serde_json::json!({"count": 5, "age": "90s"})),
            age(Some(5), 90_000)
        );
        assert_eq!(keep(serde_json::json!({"count": 7})), Keep::count(7));
        assert_eq!(keep(serde_json::json!(false)), Keep::ALL);
        assert!(keep(serde_json::json!({"age": 0})).none());
    }
}
