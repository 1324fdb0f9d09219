//! HPA stabilization windows: every tick's recommendation is remembered; scaling down uses the
//! highest recommendation within `scale_down.window`, scaling up the lowest within
//! `scale_up.window` (so a window of 0 s reacts at once).

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Windows {
    history: VecDeque<(u64, u32)>,
    /// The first tick's time and the count running then, until it ages out of the windows.
    start: Option<(u64, u32)>,
    began: bool,
}

impl Windows {
    /// Records a count decided past the metrics' recommendation (a rule fired): a scale-down
    /// then waits a whole window from it too, as HPA's stabilization looks at what every
    /// metric asked for, so a rule's scale-out is not undone by the targets the next second.
    pub(crate) fn note(&mut self, now_ms: u64, count: u32) {
        self.history.push_back((now_ms, count));
    }

    /// Records `rec` at `now_ms` and returns the stabilized count for `current`.
    pub(crate) fn stabilize(
        &mut self,
        now_ms: u64,
        rec: u32,
        current: u32,
        up: Duration,
        down: Duration,
    ) -> u32 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (up, down) = (ms(up), ms(down));
        let keep = up.max(down);
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > keep || *t > now_ms)
        {
            self.history.pop_front();
        }
        // The first tick: the count running then counts as recommended just before it, so a
        // scale-down waits a whole window from herd's start too (a fleet started with more
        // instances than the metrics ask for is not cut in its first second). Windows of 0 s
        // ignore it and react at once.
        if !self.began {
            self.began = true;
            self.start = Some((now_ms, current));
        }
        // It ages out as the history does, for good: a reload that lengthens a window later
        // does not bring it back.
        if self
            .start
            .is_some_and(|(t, _)| now_ms.saturating_sub(t) > keep)
        {
            self.start = None;
        }
        self.history.push_back((now_ms, rec));
        let mut up_rec = rec;
        let mut down_rec = rec;
        if let Some((t, count)) = self.start {
            let age = now_ms.saturating_sub(t);
            if up > 0 && age <= up {
                up_rec = up_rec.min(count);
            }
            if down > 0 && age <= down {
                down_rec = down_rec.max(count);
            }
        }
        for (t, r) in &self.history {
            let age = now_ms.saturating_sub(*t);
            if age <= up {
                up_rec = up_rec.min(*r);
            }
            if age <= down {
                down_rec = down_rec.max(*r);
            }
        }
        let mut out = current;
        if out < up_rec {
            out = up_rec;
        }
        if out > down_rec {
            out = down_rec;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn down_window_holds_the_highest() {
        let mut w = Windows::default();
        let (up, down) = (Duration::ZERO, Duration::from_secs(300));
        assert_eq!(w.stabilize(0, 8, 4, up, down), 8, "up at once");
        assert_eq!(w.stabilize(S, 5, 8, up, down), 8);
        assert_eq!(w.stabilize(299 * S, 5, 8, up, down), 8);
        assert_eq!(w.stabilize(301 * S, 5, 8, up, down), 5);
    }

    #[test]
    fn the_start_count_ages_out_for_good() {
        let mut w = Windows::default();
        let down = Duration::from_secs(300);
        // Started with 10, asked for 3: held for the window, then down.
        assert_eq!(w.stabilize(0, 3, 10, Duration::ZERO, down), 10);
        assert_eq!(w.stabilize(301 * S, 3, 10, Duration::ZERO, down), 3);
        // A longer window later (a reload) does not bring the start back.
        let longer = Duration::from_secs(3600);
        assert_eq!(w.stabilize(600 * S, 3, 3, Duration::ZERO, longer), 3);
        assert_eq!(
            w.stabilize(601 * S, 9, 3, longer, longer),
            3,
            "up waits its own window"
        );
    }

    #[test]
    fn up_window_uses_the_lowest() {
        let mut w = Windows::default();
        let (up, down) = (Duration::from_secs(60), Duration::ZERO);
        assert_eq!(w.stabilize(0, 4, 4, up, down), 4);
        assert_eq!(w.stabilize(30 * S, 9, 4, up, down), 4);
        assert_eq!(w.stabilize(61 * S, 9, 4, up, down), 9);
        assert_eq!(w.stabilize(62 * S, 2, 9, up, down), 2, "down at once");
    }
}
