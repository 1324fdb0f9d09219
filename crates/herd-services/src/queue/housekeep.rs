//! When a reserve does the queue's housekeeping: materialising due schedules, promoting due
//! delayed jobs and recovering stalled ones. Each is a store round trip (or several), so
//! running all three on every reserve made them most of a reserve's cost. Each node keeps,
//! per queue, when it last ran each chore (at the injected clock) and runs it again only
//! once its interval has passed; the first reserve runs them all.
//!
//! Nothing waits longer for this than one interval, and a reserve that finds nothing waiting
//! runs every chore it skipped at once and looks again (see `reserve_once`), so a due job is
//! never left undelivered while a worker asks for work. Throttling only delays, never
//! skips: promotion and recovery read the sets, so whatever came due meanwhile is found by
//! the next run, on this node or any other.

/// Promotion of due delayed jobs (a delayed job is late by at most this much while other
/// jobs are waiting; BullMQ promotes from its worker's delay timer).
pub(crate) const PROMOTE_EVERY_MS: i64 = 20;
/// Stalled-job recovery (BullMQ `stalledInterval` is 30 s).
pub(crate) const STALLED_EVERY_MS: i64 = 1_000;
/// Repeatable-job schedules.
pub(crate) const SCHEDULES_EVERY_MS: i64 = 1_000;

/// When this node last ran each chore for one queue (`None`: never).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Housekeeping {
    schedules: Option<i64>,
    promote: Option<i64>,
    stalled: Option<i64>,
}

/// The chores to run now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chores {
    pub schedules: bool,
    pub promote: bool,
    pub stalled: bool,
}

impl Chores {
    /// Every chore, except those already in `done`.
    pub(crate) fn all_but(done: Chores) -> Chores {
        Chores {
            schedules: !done.schedules,
            promote: !done.promote,
            stalled: !done.stalled,
        }
    }
}

fn due(last: &mut Option<i64>, now: i64, every: i64, force: bool) -> bool {
    let run = force || last.is_none_or(|t| now - t >= every || now < t);
    if run {
        *last = Some(now);
    }
    run
}

impl Housekeeping {
    /// Which chores are due at `now` (or those in `force`), recording them as run: the
    /// caller that gets a chore runs it, so concurrent reserves on this node do not repeat
    /// it. A clock that went back counts as due.
    pub(crate) fn take(&mut self, now: i64, force: Chores) -> Chores {
        Chores {
            schedules: due(
                &mut self.schedules,
                now,
                SCHEDULES_EVERY_MS,
                force.schedules,
            ),
            promote: due(&mut self.promote, now, PROMOTE_EVERY_MS, force.promote),
            stalled: due(&mut self.stalled, now, STALLED_EVERY_MS, force.stalled),
        }
    }
}

impl Housekeeping {
    /// Which of the chores in `only` are due at `now`, recording those as run (the others
    /// are left as they are).
    pub(crate) fn take_only(&mut self, now: i64, only: Chores) -> Chores {
        let mut rest = *self;
        let taken = rest.take(now, Chores::default());
        let pick = Chores {
            schedules: taken.schedules && only.schedules,
            promote: taken.promote && only.promote,
            stalled: taken.stalled && only.stalled,
        };
        if pick.schedules {
            self.schedules = rest.schedules;
        }
        if pick.promote {
            self.promote = rest.promote;
        }
        if pick.stalled {
            self.stalled = rest.stalled;
        }
        pick
    }
}

impl Chores {
    /// The chores in either.
    pub(crate) fn or(self, other: Chores) -> Chores {
        Chores {
            schedules: self.schedules || other.schedules,
            promote: self.promote || other.promote,
            stalled: self.stalled || other.stalled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Chores = Chores {
        schedules: true,
        promote: true,
        stalled: true,
    };
    const NONE: Chores = Chores {
        schedules: false,
        promote: false,
        stalled: false,
    };

    #[test]
    fn first_call_runs_everything_then_each_chore_at_its_interval() {
        let mut h = Housekeeping::default();
        assert_eq!(h.take(1_000, NONE), ALL);
        assert_eq!(h.take(1_000, NONE), NONE);
        assert_eq!(h.take(1_019, NONE), NONE);
        let c = h.take(1_020, NONE);
        assert!(c.promote && !c.stalled && !c.schedules);
        let c = h.take(2_000, NONE);
        assert_eq!(c, ALL);
        // A clock that went back does not stall housekeeping.
        assert_eq!(h.take(500, NONE), ALL);
    }

    #[test]
    fn taking_some_chores_leaves_the_others_due() {
        let mut h = Housekeeping::default();
        let stalled = Chores {
            stalled: true,
            ..NONE
        };
        let early = h.take_only(0, Chores::all_but(stalled));
        assert_eq!(early, Chores::all_but(stalled));
        assert_eq!(h.take_only(0, ALL), stalled, "stalled is still due");
        assert_eq!(h.take_only(0, ALL), NONE);
        assert_eq!(early.or(stalled), ALL);
    }

    #[test]
    fn forcing_runs_only_what_was_not_just_run() {
        let mut h = Housekeeping::default();
        let first = h.take(0, NONE);
        assert_eq!(Chores::all_but(first), NONE);
        let second = h.take(5, NONE);
        assert_eq!(second, NONE);
        assert_eq!(h.take(5, Chores::all_but(second)), ALL);
    }
}
