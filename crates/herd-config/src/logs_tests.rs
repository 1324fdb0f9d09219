//! `[logs] time` and `date_format`: the timestamp before each line of instance output.

use std::path::Path;

use crate::{parse, Config, ConfigError};

const APP: &str = "[[app]]\nname = \"web\"\ncommand = [\"./app\"]\n";

fn ok(text: &str) -> Config {
    match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => cfg,
        Err(errs) => panic!("expected a valid config, got:\n{errs}"),
    }
}

/// The single error in `text`, with its key and hint.
#[track_caller]
fn one(text: &str, key: &str) -> ConfigError {
    let errs = match parse(text, "herd.toml", Path::new("/base")) {
        Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
        Err(errs) => errs.0,
    };
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!(err.key, key, "{err}");
    assert!(err.hint.is_some(), "every error has a hint: {err}");
    err
}

#[test]
fn no_timestamps_unless_asked() {
    assert_eq!(ok(APP).logs.date_format, None);
    let off = ok(&format!("[logs]\ntime = false\n{APP}"));
    assert_eq!(off.logs.date_format, None);
}

#[test]
fn time_takes_the_rfc3339_format_and_date_format_its_own() {
    let on = ok(&format!("[logs]\ntime = true\n{APP}"));
    assert_eq!(
        on.logs.date_format.as_deref(),
        Some("%Y-%m-%dT%H:%M:%S.%3f%:z")
    );
    let own = ok(&format!("[logs]\ndate_format = \"%F %T %Z\"\n{APP}"));
    assert_eq!(own.logs.date_format.as_deref(), Some("%F %T %Z"));
    let both = ok(&format!("[logs]\ntime = true\ndate_format = \"%T\"\n{APP}"));
    assert_eq!(both.logs.date_format.as_deref(), Some("%T"));
}

#[test]
fn a_pm2_format_is_refused_with_its_strftime_spelling() {
    let err = one(
        &format!("[logs]\ndate_format = \"YYYY-MM-DD HH:mm:ss Z\"\n{APP}"),
        "logs.date_format",
    );
    assert!(err.message.contains("no % conversion"), "{err}");
    assert!(
        err.hint
            .as_deref()
            .unwrap()
            .contains("date_format = \"%Y-%m-%d %H:%M:%S %:z\""),
        "{err}"
    );
}

#[test]
fn bad_formats_are_refused() {
    for bad in ["", "%Q%", "%Y\\n", "no conversion"] {
        let err = one(
            &format!("[logs]\ndate_format = \"{bad}\"\n{APP}"),
            "logs.date_format",
        );
        assert!(err.message.starts_with("date_format"), "{bad}: {err}");
    }
    let err = one(
        &format!("[logs]\ntime = false\ndate_format = \"%T\"\n{APP}"),
        "logs.date_format",
    );
    assert!(err.message.contains("time = false"), "{err}");
}

#[test]
fn pm2_keys_in_an_app_point_to_logs() {
    let err = one(
        &format!("{APP}log_date_format = \"YYYY\"\n"),
        "app[0].log_date_format",
    );
    assert!(
        err.hint.as_deref().unwrap().contains("[logs] date_format"),
        "{err}"
    );
    let err = one(&format!("{APP}time = true\n"), "app[0].time");
    assert!(
        err.hint.as_deref().unwrap().contains("[logs] time = true"),
        "{err}"
    );
}
