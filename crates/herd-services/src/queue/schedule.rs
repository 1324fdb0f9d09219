//! Repeatable jobs: a named schedule (`every` interval, or `cron` in a time zone) adds its job
//! each time it comes due. Schedules are records `herd:{q:N}:sched:NAME` plus an ordered set
//! `herd:{q:N}:schedules` scored by the next firing. Every reserve adds the jobs of due
//! schedules with the job id `repeat:NAME:FIRE_MS`, so nodes that race add it once (dedupe).
//! Missed firings while nobody reserved add one job, not a backlog (BullMQ does the same).

use std::time::Duration;

use bytes::Bytes;
use herd_config::Cron;
use herd_store::{Backend as _, Expect, Written};
use jiff::{tz::TimeZone, Timestamp};
use serde::{Deserialize, Serialize};

use super::{check_queue, score, spec::JobSpec, Keys, Queues};
use crate::clock::millis;
use crate::error::{ServiceError, ServiceResult};

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Repeat {
    /// Every interval, from when the schedule was set.
    Every(Duration),
    /// A five-field cron expression in an IANA time zone.
    Cron { cron: Cron, tz: String },
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    pub job: JobSpec,
    /// The next firing (ms since the epoch).
    pub next_ms: i64,
}

/// How far ahead a cron firing is looked for.
const LOOKAHEAD_DAYS: u32 = 366 * 5;

/// The first firing of `cron` in `tz` strictly after `after_ms`.
pub(crate) fn next_fire(cron: &Cron, tz: &TimeZone, after_ms: i64) -> Option<i64> {
    let local = Timestamp::from_millisecond(after_ms)
        .ok()?
        .to_zoned(tz.clone())
        .datetime();
    let mut date = local.date();
    for _ in 0..=LOOKAHEAD_DAYS {
        let weekday = u32::try_from(date.weekday().to_sunday_zero_offset()).unwrap_or(0);
        let month = u32::try_from(date.month()).unwrap_or(0);
        let day = u32::try_from(date.day()).unwrap_or(0);
        if cron.date_matches(month, day, weekday) {
            for hour in (0..24u32).filter(|h| cron.hour_matches(*h)) {
                for minute in (0..60u32).filter(|m| cron.minute_matches(*m)) {
                    let (Ok(h), Ok(m)) = (i8::try_from(hour), i8::try_from(minute)) else {
                        continue;
                    };
                    // A time skipped by a DST change fires at the shifted time ("compatible").
                    let Ok(zoned) = tz.to_ambiguous_zoned(date.at(h, m, 0, 0)).compatible() else {
                        continue;
                    };
                    let at = zoned.timestamp().as_millisecond();
                    if at > after_ms {
                        return Some(at);
                    }
                }
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// The first firing after `now` on the grid `from + k × every` (k ≥ 1).
fn next_on_grid(from: i64, every: u64, now: i64) -> i64 {
    let every = i64::try_from(every.max(1)).unwrap_or(i64::MAX / 4);
    if now < from {
        return from.saturating_add(every);
    }
    let k = (now - from) / every + 1;
    from.saturating_add(k.saturating_mul(every))
}

fn next_after(info: &ScheduleInfo, after_ms: i64) -> ServiceResult<i64> {
    match (&info.every_ms, &info.cron) {
        (Some(every), _) => Ok(after_ms + i64::try_from(*every).unwrap_or(i64::MAX / 4)),
        (None, Some(text)) => {
            let cron = parse_cron(text)?;
            let tz = zone(info.tz.as_deref())?;
            next_fire(&cron, &tz, after_ms).ok_or_else(|| {
                ServiceError::invalid(
                    "cron",
                    format!(
                        "{} never fires in the next five years",
                        crate::error::quoted(text)
                    ),
                    "check the day-of-month and month fields",
                )
            })
        }
        (None, None) => Err(ServiceError::invalid(
            "schedule",
            "neither every nor cron is set",
            "set \"every\": \"5m\" or \"cron\": \"0 8 * * 1-5\"",
        )),
    }
}

fn parse_cron(text: &str) -> ServiceResult<Cron> {
    Cron::parse(text).map_err(|reason| {
        ServiceError::invalid(
            "cron",
            reason,
            "use five fields: minute hour day-of-month month day-of-week, e.g. \"0 8 * * 1-5\", or @hourly/@daily",
        )
    })
}

fn zone(tz: Option<&str>) -> ServiceResult<TimeZone> {
    match tz {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| {
            ServiceError::invalid(
                "tz",
                format!("{}: {e}", crate::error::quoted(name)),
                "use an IANA time zone name such as \"Europe/Paris\" or \"UTC\"",
            )
        }),
    }
}

/// The longest name a new schedule takes: its jobs' ids (`repeat:NAME:TIME`) must stay within
/// the 200 bytes of a job id.
pub(super) const MAX_NEW_NAME: usize = 160;

/// A name as every schedule call takes it (up to 200 bytes, as older herds created them).
pub(super) fn check_name(name: &str) -> ServiceResult<()> {
    if name.is_empty() || name.len() > 200 || name.contains(['\0', '/', ':']) {
        return Err(ServiceError::invalid(
            "schedule name",
            format!(
                "{} is empty, too long or contains '/', ':' or NUL",
                crate::error::quoted(name)
            ),
            "use a name like nightly-report",
        ));
    }
    Ok(())
}

impl Queues {
    /// Creates or replaces the schedule `name`; returns it with its next firing. Set again with
    /// the same `every` (or `cron` and `tz`), it keeps its next firing (its job may change).
    ///
    /// # Errors
    /// `Invalid` repeat, zone or job; store errors.
    pub async fn set_schedule(
        &self,
        queue: &str,
        name: &str,
        repeat: Repeat,
        job: JobSpec,
    ) -> ServiceResult<ScheduleInfo> {
        check_queue(queue)?;
        check_name(name)?;
        if name.len() > MAX_NEW_NAME {
            return Err(ServiceError::invalid(
                "schedule name",
                format!(
                    "{} is {} bytes, over {MAX_NEW_NAME}",
                    crate::error::quoted(name),
                    name.len()
                ),
                "use a shorter name: each job the schedule adds is named repeat:NAME:TIME, and a job id is at most 200 bytes",
            ));
        }
        job.to_new_job()?;
        if job.job_id.is_some() {
            return Err(ServiceError::invalid(
                "job.job_id",
                "a schedule names each job it adds itself (repeat:NAME:TIME)",
                "leave job_id out of the schedule's job; the schedule's name dedupes its firings",
            ));
        }
        let mut info = ScheduleInfo {
            name: name.to_owned(),
            every_ms: None,
            cron: None,
            tz: None,
            job,
            next_ms: 0,
        };
        match repeat {
            Repeat::Every(d) if d < Duration::from_millis(1) => {
                return Err(ServiceError::invalid(
                    "every",
                    "the interval must be at least 1ms",
                    "pass e.g. \"every\": \"5m\"",
                ))
            }
            Repeat::Every(d) => info.every_ms = Some(u64::try_from(millis(d)).unwrap_or(0)),
            Repeat::Cron { cron, tz } => {
                zone(Some(&tz))?;
                info.cron = Some(cron.as_str().to_owned());
                info.tz = Some(tz);
            }
        }
        let keys = Keys::new(queue);
        // The same interval (or cron and zone) set again keeps its timetable: workers upsert
        // their schedules at every start (BullMQ's `upsertJobScheduler`), and restarting the
        // interval each time would keep a schedule from ever firing (and drop a due firing).
        let kept = match self.store.get(&keys.set(&format!("sched:{name}"))).await? {
            Some(raw) => serde_json::from_slice::<ScheduleInfo>(&raw.value)
                .ok()
                .filter(|old| {
                    (&old.every_ms, &old.cron, &old.tz) == (&info.every_ms, &info.cron, &info.tz)
                })
                .map(|old| old.next_ms),
            None => None,
        };
        info.next_ms = match kept {
            Some(next) => next,
            None => next_after(&info, self.clock.now_ms())?,
        };
        let body = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        self.store
            .put(&keys.set(&format!("sched:{name}")), body, Expect::Any, None)
            .await?;
        self.store
            .zadd(
                &keys.set("schedules"),
                &[(name.to_owned(), score(info.next_ms))],
            )
            .await?;
        Ok(info)
    }

    /// Parses the HTTP form of a repeat (`every` xor `cron`, `tz` only with `cron`).
    ///
    /// # Errors
    /// `Invalid` with what to set.
    pub fn parse_repeat(
        every: Option<&str>,
        cron: Option<&str>,
        tz: Option<&str>,
    ) -> ServiceResult<Repeat> {
        let every = every
            .map(|e| super::spec::duration("every", e))
            .transpose()?;
        Self::repeat_of(every, cron, tz)
    }

    /// [`Queues::parse_repeat`] with `every` already read (from a text or a number of
    /// milliseconds).
    ///
    /// # Errors
    /// `Invalid` with what to set.
    pub fn repeat_of(
        every: Option<std::time::Duration>,
        cron: Option<&str>,
        tz: Option<&str>,
    ) -> ServiceResult<Repeat> {
        match (every, cron) {
            (Some(e), None) if tz.is_none() => Ok(Repeat::Every(e)),
            (Some(_), None) => Err(ServiceError::invalid(
                "tz",
                "a time zone only applies to cron schedules",
                "remove \"tz\" or use \"cron\"",
            )),
            (None, Some(c)) => {
                let cron = parse_cron(c)?;
                let tz = tz.unwrap_or("UTC").to_owned();
                zone(Some(&tz))?;
                Ok(Repeat::Cron { cron, tz })
            }
            _ => Err(ServiceError::invalid(
                "schedule",
                "set exactly one of \"every\" and \"cron\"",
                "e.g. {\"every\": \"5m\", \"job\": {...}} or {\"cron\": \"0 8 * * 1-5\", \"tz\": \"Europe/Paris\", \"job\": {...}}",
            )),
        }
    }

    /// Removes the schedule `name` (jobs it already added stay).
    ///
    /// # Errors
    /// `NotFound`; store errors.
    pub async fn delete_schedule(&self, queue: &str, name: &str) -> ServiceResult<()> {
        check_queue(queue)?;
        check_name(name)?;
        let keys = Keys::new(queue);
        let existed = self
            .store
            .delete(&keys.set(&format!("sched:{name}")), Expect::Any)
            .await?;
        let in_set = self
            .store
            .zrem(&keys.set("schedules"), &[name.to_owned()])
            .await?;
        if existed || in_set > 0 {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!(
                "schedule {name} in queue {queue}"
            )))
        }
    }

    /// Adds the jobs of schedules that came due; returns how many schedules fired.
    pub(crate) async fn run_schedules(
        &self,
        queue: &str,
        keys: &Keys,
        now: i64,
    ) -> ServiceResult<usize> {
        let due = self
            .store
            .zrange_by_score(&keys.set("schedules"), f64::NEG_INFINITY, score(now), 50)
            .await?;
        let fired = due.len();
        for (name, _) in due {
            let Some(raw) = self.store.get(&keys.set(&format!("sched:{name}"))).await? else {
                self.store.zrem(&keys.set("schedules"), &[name]).await?;
                continue;
            };
            let Ok(info) = serde_json::from_slice::<ScheduleInfo>(&raw.value) else {
                tracing::warn!(queue, schedule = %name, "unreadable schedule record; removing it from the timetable");
                self.store.zrem(&keys.set("schedules"), &[name]).await?;
                continue;
            };
            let added = match info.job.to_new_job() {
                Ok(mut job) => {
                    job.job_id = Some(format!("repeat:{name}:{}", info.next_ms));
                    self.add_quiet(queue, job).await
                }
                Err(e) => Err(e),
            };
            match added {
                Ok(_) => {}
                // A job this schedule can never add (an older herd took longer names, say)
                // must not fail the reserve that ran the schedules: this firing is skipped.
                Err(e @ ServiceError::Invalid { .. }) => {
                    tracing::warn!(queue, schedule = %name, error = %e, "schedule's job is invalid; skipping this firing");
                }
                // The store: the firing is tried again by the next run.
                Err(e) => return Err(e),
            }
            let next = match info.every_ms {
                // Every interval from when the schedule was set: missed firings are skipped,
                // the next stays on that grid (BullMQ's `every` does not drift).
                Some(every) => next_on_grid(info.next_ms, every, now),
                None => next_after(&info, now.max(info.next_ms))?,
            };
            let mut updated = info;
            updated.next_ms = next;
            let body = Bytes::from(serde_json::to_vec(&updated).unwrap_or_default());
            let written = self
                .store
                .put(
                    &keys.set(&format!("sched:{name}")),
                    body,
                    Expect::Version(raw.version),
                    None,
                )
                .await?;
            // Changed meanwhile (set again, or another node fired it): its writer placed it.
            if !matches!(written, Written::Ok(_)) {
                continue;
            }
            self.store
                .zadd(&keys.set("schedules"), &[(name, score(next))])
                .await?;
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn every_stays_on_its_grid() {
        // Set at 0 with every 10: firings at 10, 20, 30...; a late run skips missed ones.
        assert_eq!(next_on_grid(10, 10, 10), 20);
        assert_eq!(next_on_grid(10, 10, 13), 20);
        assert_eq!(next_on_grid(10, 10, 35), 40);
        assert_eq!(
            next_on_grid(10, 10, 5),
            20,
            "early: the next after the due one"
        );
        assert_eq!(next_on_grid(i64::MAX - 5, 10, i64::MAX), i64::MAX);
    }

    #[test]
    fn next_cron_firing_in_a_zone() {
        let cron = Cron::parse("0 8 * * 1-5").unwrap();
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // Friday 2026-11-20 08:00 Paris = 07:00 UTC; asked on Friday 09:00 UTC → Monday.
        assert_eq!(
            next_fire(&cron, &paris, ms("2026-11-20T09:00:00Z")),
            Some(ms("2026-11-23T07:00:00Z"))
        );
        assert_eq!(
            next_fire(&cron, &paris, ms("2026-11-20T06:59:00Z")),
            Some(ms("2026-11-20T07:00:00Z"))
        );
        // Strictly after: at the firing itself, the next one.
        assert_eq!(
            next_fire(&cron, &TimeZone::UTC, ms("2026-11-23T08:00:00Z")),
            Some(ms("2026-11-24T08:00:00Z"))
        );
        // A date that never comes is refused when parsed.
        assert!(Cron::parse("0 0 31 2 *").is_err());
    }

    #[test]
    fn repeat_needs_exactly_one_of_every_and_cron() {
        assert!(Queues::parse_repeat(Some("5m"), None, None).is_ok());
        assert!(Queues::parse_repeat(None, Some("@hourly"), Some("Asia/Tokyo")).is_ok());
        assert!(Queues::parse_repeat(None, None, None).is_err());
        assert!(Queues::parse_repeat(Some("5m"), Some("@hourly"), None).is_err());
        assert!(Queues::parse_repeat(Some("5m"), None, Some("UTC")).is_err());
        let e = Queues::parse_repeat(None, Some("0 8 * *"), None).unwrap_err();
        assert!(e.hint().contains("five fields"), "{e}");
        let e = Queues::parse_repeat(None, Some("@daily"), Some("Mars/Base")).unwrap_err();
        assert!(e.to_string().contains("Mars/Base"), "{e}");
    }
}
