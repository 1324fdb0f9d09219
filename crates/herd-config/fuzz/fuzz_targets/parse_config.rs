//! Any text given to herd's config parser and validator (TOML, durations, sizes, addresses,
//! routes with regexes, rate limits, alerts, scaling schedules) must come back as a config or
//! as errors, never as a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = herd_config::parse(text, "fuzz.toml", std::path::Path::new("."));
    }
});
