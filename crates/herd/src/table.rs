//! `herd status` output: one table per app.

use std::fmt::Write as _;

use serde_json::Value;

fn uptime(s: f64) -> String {
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}MiB", b as f64 / (1024.0 * 1024.0))
}

/// What overrides an app's autoscaler, from its entry of `GET /scaling/status`
/// (`{"enabled", "status": {"manual", "paused"}}`): a count set by hand, or a pause.
fn scaling_line(s: &Value) -> Option<String> {
    if s["enabled"].as_bool() != Some(true) {
        return None;
    }
    let status = &s["status"];
    if let Some(n) = status["manual"]["instances"].as_u64() {
        let why = status["manual"]["reason"].as_str().unwrap_or("");
        return Some(format!(
            "autoscaling overridden: {n} set by hand ({why}); `herd scale APP auto` hands the count back"
        ));
    }
    (status["paused"].as_bool() == Some(true))
        .then(|| "autoscaling paused: the count stays as it is".to_owned())
}

pub(crate) fn render(v: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for app in v["apps"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            out,
            "{} ({}): {} ready / {} desired{}",
            app["name"].as_str().unwrap_or("?"),
            app["kind"].as_str().unwrap_or("?"),
            app["ready"],
            app["desired"],
            if app["reloading"].as_bool() == Some(true) {
                ", reloading"
            } else {
                ""
            }
        );
        if let Some(failed) = app["last_reload"]
            .as_str()
            .filter(|r| r.starts_with("failed"))
        {
            let _ = writeln!(out, "  last rolling reload {failed}");
        }
        if let Some(line) = scaling_line(&app["scaling"]) {
            let _ = writeln!(out, "  {line}");
        }
        let header = [
            "ID",
            "PID",
            "PORT",
            "STATE",
            "UPTIME",
            "RESTARTS",
            "RSS",
            "CPU%",
            "IN-FLIGHT",
            "REQ/S",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        let mut exits = Vec::new();
        for i in app["instances"].as_array().unwrap_or(&empty) {
            let opt = |k: &str| match &i[k] {
                Value::Null => "-".to_owned(),
                x => x.to_string(),
            };
            let mut state = i["state"].as_str().unwrap_or("?").to_owned();
            if let Some(ms) = i["next_restart_in_ms"].as_u64() {
                let _ = write!(state, " (in {ms}ms)");
            }
            // No process (errored, waiting to restart): nothing to measure, not zero.
            let running = !i["pid"].is_null() || !i["addr"].is_null();
            let measured = |text: String| if running { text } else { "-".to_owned() };
            let rss = i["rss_bytes"].as_u64().unwrap_or(0);
            let sampled = |text: String| {
                if running && rss > 0 {
                    text
                } else {
                    "-".to_owned()
                }
            };
            rows.push(vec![
                i["id"].as_str().unwrap_or("?").to_owned(),
                opt("pid"),
                i["port"].as_u64().map_or_else(
                    || i["addr"].as_str().unwrap_or("-").to_owned(),
                    |p| p.to_string(),
                ),
                state,
                measured(uptime(i["uptime_s"].as_f64().unwrap_or(0.0))),
                opt("restarts"),
                // A process just started has not been sampled yet (a live one is never 0 B).
                sampled(mib(rss)),
                sampled(format!("{:.1}", i["cpu_percent"].as_f64().unwrap_or(0.0))),
                opt("in_flight"),
                measured(format!("{:.1}", i["rps"].as_f64().unwrap_or(0.0))),
            ]);
            // Why a running instance is not in rotation: its last health check failed.
            if (i["state"] == "starting" || i["state"] == "down") && i["last_check"]["ok"] == false
            {
                if let Some(detail) = i["last_check"]["detail"].as_str() {
                    let why = if i["state"] == "down" {
                        "down"
                    } else {
                        "not ready"
                    };
                    exits.push(format!(
                        "  {} {why}: last health check: {detail}",
                        i["id"].as_str().unwrap_or("?")
                    ));
                }
            }
            if let Some(exit) = i["last_exit"].as_str() {
                exits.push(format!(
                    "  {} last exit: {exit}",
                    i["id"].as_str().unwrap_or("?")
                ));
                if i["state"] == "errored" {
                    // What the app printed says why; the exit code rarely does.
                    exits.push(format!(
                        "  {} errored: its output says why: herd logs {}",
                        i["id"].as_str().unwrap_or("?"),
                        app["name"].as_str().unwrap_or("?")
                    ));
                }
            }
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
        for line in exits {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_instances() {
        let v = serde_json::json!({"apps":[{"name":"web","kind":"command","ready":1,"desired":1,"reloading":false,
            "instances":[{"id":"web-1","pid":42,"port":20000,"state":"ready","uptime_s":75.0,"restarts":0,
            "rss_bytes":10485760u64,"cpu_percent":1.5,"in_flight":0,"requests_total":3,"rps":2.0,"next_restart_in_ms":null}]}]});
        let t = render(&v);
        assert!(t.contains("web (command): 1 ready / 1 desired"));
        assert!(t.contains("web-1"));
        assert!(t.contains("1m15s"));
        assert!(t.contains("10.0MiB"));
        assert!(!t.contains("last exit"));
    }

    #[test]
    fn a_starting_instance_says_why_it_is_not_ready() {
        let v = serde_json::json!({"apps":[{"name":"web","kind":"command","ready":0,"desired":1,"reloading":false,
            "instances":[{"id":"web-1","pid":42,"port":20000,"state":"starting","uptime_s":5.0,"restarts":0,
            "rss_bytes":0,"cpu_percent":0.0,"in_flight":0,"requests_total":0,"rps":0.0,"next_restart_in_ms":null,
            "last_check":{"at_unix_ms":1,"ok":false,"detail":"HTTP 500"}}]}]});
        let t = render(&v);
        assert!(
            t.contains("  web-1 not ready: last health check: HTTP 500"),
            "{t}"
        );
        // Not sampled yet: no memory or CPU figure, rather than 0.
        assert!(!t.contains("0.0MiB"), "{t}");
    }

    #[test]
    fn a_manual_count_or_a_pause_over_the_autoscaler_shows() {
        let app = |scaling: Value| {
            serde_json::json!({"apps":[{"name":"web","kind":"command","ready":3,"desired":3,
                "reloading":false,"instances":[],"scaling":scaling}]})
        };
        let t = render(&app(serde_json::json!({"enabled":true,
            "status":{"manual":{"instances":3,"reason":"herd scale"},"paused":false}})));
        assert!(
            t.contains("autoscaling overridden: 3 set by hand (herd scale); `herd scale APP auto`"),
            "{t}"
        );
        let t = render(&app(serde_json::json!({"enabled":true,
            "status":{"manual":null,"paused":true}})));
        assert!(t.contains("autoscaling paused"), "{t}");
        let t = render(&app(serde_json::json!({"enabled":true,
            "status":{"manual":null,"paused":false}})));
        assert!(!t.contains("autoscaling"), "{t}");
    }

    #[test]
    fn errored_instances_show_no_figures_and_their_last_exit() {
        let v = serde_json::json!({"apps":[{"name":"web","kind":"command","ready":0,"desired":1,"reloading":false,
            "instances":[{"id":"web-1","pid":null,"port":null,"state":"errored","uptime_s":0.0,"restarts":16,
            "rss_bytes":0,"cpu_percent":0.0,"in_flight":0,"requests_total":0,"rps":0.0,"next_restart_in_ms":null,
            "last_exit":"exit status: 3 after 0.0s"}]}]});
        let t = render(&v);
        let row = t
            .lines()
            .find(|l| l.contains("web-1") && l.contains("errored"))
            .unwrap();
        assert!(!row.contains("0s") && !row.contains("MiB"), "{row}");
        assert!(
            t.contains("  web-1 last exit: exit status: 3 after 0.0s")
                && t.contains("  web-1 errored: its output says why: herd logs web"),
            "{t}"
        );
    }
}
