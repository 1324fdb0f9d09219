//! Any request text the services API parses (a job's JSON with its durations, backoff and
//! keep counts, a schedule's every / cron / tz, a rate such as "10r/s") must come back as a
//! value or an error with a hint, never as a panic.
#![no_main]

use herd_services::queue::{JobSpec, Queues};
use herd_services::ratelimit::Rate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<JobSpec>(data) {
        let _ = spec.to_new_job();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Rate::parse(text);
        let mut parts = text.splitn(3, '\n');
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        let _ = Queues::parse_repeat(a, None, None);
        let _ = Queues::parse_repeat(None, b, c);
    }
});
