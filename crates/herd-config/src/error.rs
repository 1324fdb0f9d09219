//! Configuration errors: what went wrong, where (`file:line:col`), under which dotted key
//! (`app[1].health.interval`), and a hint on how to fix it.
//!
//! Also home to [`Source`], which turns byte offsets from TOML spans into line/column numbers,
//! and to the conversion of TOML/serde errors (syntax errors, unknown keys, wrong types).

use std::fmt;
use std::ops::Range;

/// One problem found in a configuration.
///
/// Displays as `herd.toml:12:12: app[0].health.interval: invalid duration "2x": unknown unit "x"`
/// followed, when there is a hint, by a second line `  hint: ...`.
/// `line` and `col` are 1-based; both are 0 when the error has no position in a file
/// (quick mode, or a file that could not be read), and are then left out of the display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file as given (or `command line` in quick mode).
    pub file: String,
    /// 1-based line of the offending value; 0 if unknown.
    pub line: usize,
    /// 1-based column (in characters) of the offending value; 0 if unknown.
    pub col: usize,
    /// Dotted key path such as `app[1].health.interval` or `route[0].app`; empty if unknown.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All problems found in a configuration, in file order.
///
/// Displays one error per line (each followed by its hint line, if any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors(vec![err])
    }
}

/// The text being validated, used to turn byte offsets into line/column numbers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) file: &'a str,
    /// `None` for synthetic configs (quick mode): every position is reported as 0:0.
    text: Option<&'a str>,
}

impl<'a> Source<'a> {
    /// Where `needle` first appears after `after` in the file (a table name, for an error
    /// about a key of a map whose keys carry no position); the start of the file otherwise.
    pub(crate) fn find(&self, after: &str, needle: &str) -> std::ops::Range<usize> {
        let Some(text) = self.text else {
            return 0..0;
        };
        let from = text.find(after).unwrap_or(0);
        text[from..]
            .find(needle)
            .map_or(0..0, |i| from + i..from + i + needle.len())
    }

    pub(crate) fn file(file: &'a str, text: &'a str) -> Self {
        Source {
            file,
            text: Some(text),
        }
    }

    pub(crate) fn synthetic(file: &'a str) -> Self {
        Source { file, text: None }
    }

    /// 1-based (line, column) of a byte offset; (0, 0) for synthetic sources.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let Some(text) = self.text else {
            return (0, 0);
        };
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).unwrap_or("").chars().count() + 1;
        (line, col)
    }

    /// Builds an error located at the start of `span`.
    pub(crate) fn error(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ConfigError {
        let (line, col) = self.locate(span.start);
        ConfigError {
            file: self.file.to_owned(),
            line,
            col,
            key: key.into(),
            message: message.into(),
            hint,
        }
    }

    /// Converts a TOML syntax or deserialization error into a [`ConfigError`].
    pub(crate) fn serde_error(
        &self,
        err: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let inner = err.inner();
        let span = inner.span().unwrap_or(0..0);
        // Spanned<T> shows up in the path as a private wrapper key; drop it.
        let mut key = String::new();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key: k }
                | serde_path_to_error::Segment::Enum { variant: k } => {
                    if k.starts_with("$__") {
                        continue;
                    }
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        if key.is_empty() {
            if let Some(text) = self.text {
                key = guess_key(text, span.start);
            }
        }
        let (mut message, hint) = explain_serde_message(inner.message(), &key);
        if is_secret(&key) {
            message = redact_quoted(&message);
        }
        self.error(&span, key, message, hint)
    }
}

/// Whether a key holds a secret, whose value no error message may repeat (errors are printed
/// and logged: `config reload rejected`).
fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["token", "password", "secret"]
        .iter()
        .any(|s| last.contains(s))
}

/// `message` with every value serde quoted in backticks hidden.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        out.push_str(if i % 2 == 1 { "(value hidden)" } else { part });
    }
    out
}

/// Keys of the tools herd replaces, with herd's name for the same knob (offered as the hint when
/// herd's key is valid where the foreign one was written).
const FOREIGN_NAMES: &[(&str, &str, &str)] = &[
    ("max_memory_restart", "max_memory", "PM2"),
    ("exp_backoff_restart_delay", "restart_delay", "PM2"),
    ("listen_timeout", "ready_timeout", "PM2"),
    ("script", "command", "PM2"),
    ("args", "command", "PM2"),
    ("startsecs", "min_uptime", "supervisord"),
    ("startretries", "max_restarts", "supervisord"),
    ("stopwaitsecs", "kill_timeout", "supervisord"),
    ("maxconn", "max_conn", "HAProxy"),
    ("maxconn", "max_connections", "HAProxy"),
    ("inter", "interval", "HAProxy"),
    ("slowstart", "slow_start", "HAProxy"),
    ("proxy_connect_timeout", "connect_timeout", "nginx"),
    ("proxy_read_timeout", "response_timeout", "nginx"),
    ("client_max_body_size", "max_body_size", "nginx"),
    ("client_header_buffer_size", "max_header_size", "nginx"),
    ("gzip", "compress", "nginx"),
    ("gzip_types", "compress_types", "nginx"),
    ("gzip_min_length", "compress_min_size", "nginx"),
    ("limit_conn", "max_conn_per_ip", "nginx"),
    ("worker_processes", "threads", "nginx"),
    ("nbthread", "threads", "HAProxy"),
    ("add_header", "response_headers", "nginx"),
    ("proxy_set_header", "request_headers", "nginx"),
    ("keepalive_timeout", "idle_timeout", "nginx"),
    ("keepalive", "pool_max_idle", "nginx"),
    ("worker_connections", "max_connections", "nginx"),
    ("large_client_header_buffers", "max_header_size", "nginx"),
    ("ssl_certificate", "cert", "nginx"),
    ("ssl_certificate_key", "key", "nginx"),
    ("server_name", "host", "nginx"),
    ("proxy_next_upstream", "retry_on", "nginx"),
    ("proxy_next_upstream_tries", "retries", "nginx"),
    ("timeout_connect", "connect_timeout", "HAProxy"),
    ("timeout_server", "response_timeout", "HAProxy"),
    ("timeout_client", "idle_timeout", "HAProxy"),
    ("timeout_http_keep_alive", "idle_timeout", "HAProxy"),
    ("timeout_http_request", "client_header_timeout", "HAProxy"),
    ("timeout_queue", "queue_timeout", "HAProxy"),
    ("timeout_tunnel", "tunnel_idle_timeout", "HAProxy"),
    ("interpreter", "command", "PM2"),
    ("node_args", "command", "PM2"),
    ("interpreter_args", "command", "PM2"),
];

/// Keys of the tools herd replaces whose knob is a table of its own in herd, not a key.
const FOREIGN_TABLES: &[(&str, &str, &str)] = &[
    (
        "limit_req",
        "nginx",
        "a [[rate_limit]] table (name, key, rate = \"10r/s\", burst, nodelay)",
    ),
    (
        "limit_req_zone",
        "nginx",
        "a [[rate_limit]] table (name, key, rate = \"10r/s\", burst, nodelay)",
    ),
    (
        "upstream",
        "nginx",
        "an [[app]] table (servers = [...], or command to let herd start the instances)",
    ),
    (
        "location",
        "nginx",
        "a [[route]] table (path_prefix, path, path_regex; app)",
    ),
    (
        "proxy_pass",
        "nginx",
        "app = \"<name>\" in a [[route]] table (the [[app]]'s servers are the upstream)",
    ),
    (
        "server",
        "nginx's and HAProxy",
        "servers = [\"host:port\", { addr = \"host:port\", weight = 3, backup = true }] in an [[app]] table",
    ),
    (
        "backend",
        "HAProxy",
        "an [[app]] table (servers = [...], balance, [app.health])",
    ),
    (
        "frontend",
        "HAProxy",
        "[gateway] (listen, [gateway.tls]) with [[route]] tables choosing the app",
    ),
    (
        "use_backend",
        "HAProxy",
        "a [[route]] table (host, path_prefix, header, methods; app)",
    ),
    (
        "acl",
        "HAProxy",
        "the match keys of a [[route]] table (host, path_prefix, path_regex, header, methods)",
    ),
    (
        "check",
        "HAProxy",
        "an [app.health] table (path, interval, rise, fall, expect_status); every app is checked",
    ),
    (
        "health_check",
        "nginx",
        "an [app.health] table (path, interval, rise, fall, expect_status)",
    ),
    (
        "ssl",
        "nginx",
        "a [gateway.tls] table (cert, key, [[gateway.tls.sni]])",
    ),
    (
        "ssl_certificate",
        "nginx",
        "cert in a [gateway.tls] table",
    ),
    (
        "ssl_certificate_key",
        "nginx",
        "key in a [gateway.tls] table",
    ),
    (
        "server_name",
        "nginx",
        "host in a [[route]] table (or in [[gateway.tls.sni]] for a certificate)",
    ),
    (
        "ssl_protocols",
        "nginx",
        "not a setting: herd's TLS (rustls) speaks TLS 1.2 and 1.3 only",
    ),
    (
        "wait_ready",
        "PM2",
        "a health check: an instance is ready once [app.health] passes (path = \"/health\" for an HTTP check, none for a TCP connect)",
    ),
    ("out_file", "PM2", "[logs] dir (instance output goes to <dir>/<app>/<instance>.out.log)"),
    ("error_file", "PM2", "[logs] dir (instance output goes to <dir>/<app>/<instance>.err.log)"),
    ("log_file", "PM2", "[logs] dir (one .out.log and one .err.log per instance)"),
    ("time", "PM2", "[logs] time = true (a timestamp before each line of instance output)"),
    ("log_date_format", "PM2", "[logs] date_format (a strftime format, e.g. \"%Y-%m-%d %H:%M:%S %z\")"),
    ("merge_logs", "PM2", "not needed: herd logs <app> shows every instance's lines, prefixed"),
    ("env_production", "PM2", "env (one set per config file: keep a config per environment)"),
    ("exec_mode", "PM2", "not needed: instances are always separate processes behind herd's balancer"),
    ("autorestart", "PM2", "always on; max_restarts = 0 leaves a crashed instance stopped"),
    ("instance_var", "PM2", "fixed: herd sets NODE_APP_INSTANCE (0-based) and HERD_INSTANCE"),
    ("watch", "PM2", "not built in: run herd reload <app> from your file watcher"),
    ("cron_restart", "PM2", "not built in: run herd reload <app> from cron"),
];

/// Rewrites serde's wording into herd's, and adds a hint.
fn explain_serde_message(message: &str, key: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let mut hint = String::new();
        if let Some((_, herd, origin)) = FOREIGN_NAMES
            .iter()
            .find(|(name, herd, _)| *name == field && valid.contains(herd))
        {
            hint.push_str(&format!("{origin}'s \"{field}\" is \"{herd}\" in herd; "));
        } else if let Some((_, origin, herd)) =
            FOREIGN_TABLES.iter().find(|(name, _, _)| *name == field)
        {
            hint.push_str(&format!("{origin}'s \"{field}\": in herd, {herd}; "));
        } else if let Some(best) = closest(field, &valid) {
            hint.push_str(&format!("did you mean \"{best}\"? "));
        }
        if valid.is_empty() {
            hint.push_str("no keys are allowed here");
        } else {
            hint.push_str(&format!("valid keys here: {}", valid.join(", ")));
        }
        return (format!("unknown key \"{field}\""), Some(hint));
    }
    let mut message = message
        .trim()
        .replace('\n', ": ")
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("expected a borrowed string", "expected a string");
    if let Some(at) = message.find("expected struct ") {
        message.truncate(at);
        message.push_str("expected a table");
    }
    let hint = if (key == "app" || key == "route" || key == "alert" || key == "rate_limit")
        && (message.contains("expected an array") || message.contains("duplicate key"))
    {
        Some(format!(
            "write [[{key}]] with double brackets: each {key} is one entry in an array of tables"
        ))
    } else if let Some(table) = ["app", "route", "alert", "rate_limit"]
        .into_iter()
        .find(|t| message.contains(&format!("duplicate key `{t}`")))
    {
        // `[app.health]` above the first `[[app]]` makes `app` a table, and `[[app]]` then
        // clashes with it.
        Some(format!(
            "a [{table}.<name>] table belongs after its [[{table}]] entry (it applies to the last [[{table}]] above it); and each {table} is written [[{table}]], with double brackets"
        ))
    } else if message.contains("duplicate key") {
        Some("each key may appear only once per table".to_owned())
    } else if message.contains("invalid type") {
        let field = key.rsplit('.').next().unwrap_or(key);
        let field = field.split('[').next().unwrap_or(field);
        if message.contains("expected a string") {
            Some(format!("quote the value, e.g. {field} = \"...\""))
        } else if message.contains("expected an integer") {
            Some(format!(
                "write a whole number without quotes, e.g. {field} = 3"
            ))
        } else if message.contains("expected a table") {
            let header: String = key
                .split('.')
                .map(|part| part.split('[').next().unwrap_or(part))
                .collect::<Vec<_>>()
                .join(".");
            Some(format!(
                "`{field}` is a table: write [{header}] on its own line, or {field} = {{ ... }}"
            ))
        } else {
            Some(format!("see docs/config.md for the type of `{field}`"))
        }
    } else if message.contains("invalid basic string") || message.contains("invalid literal string")
    {
        Some("a string is missing its closing quote".to_owned())
    } else if message.contains("number too large") || message.contains("number too small") {
        Some("TOML integers are 64-bit: write a number within ±9223372036854775807 (see docs/config.md for this key's range)".to_owned())
    } else {
        Some("check the TOML syntax here (see https://toml.io)".to_owned())
    };
    (message, hint)
}

/// Best-effort dotted key for a position when serde gave no path (syntax errors): the enclosing
/// table header (`[[app]]` entries numbered) plus the key at the start of the line, if any.
fn guess_key(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut line_key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let in_line = offset < pos + line.len();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|(n, _)| n.trim().to_owned())
        {
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(n, _)| n.trim().to_owned())
        {
            // `[app.health]` belongs to the latest `[[app]]` entry.
            table = match name.split_once('.') {
                Some((parent, child)) => match counts.get(parent) {
                    Some(n) if *n > 0 => format!("{parent}[{}].{child}", n - 1),
                    _ => name.clone(),
                },
                None => name.clone(),
            };
        } else if in_line {
            if let Some((k, _)) = trimmed.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && !k.starts_with('#') {
                    line_key = k.trim_matches('"').to_owned();
                }
            }
        }
        if in_line {
            break;
        }
        pos += line.len();
    }
    match (table.is_empty(), line_key.is_empty()) {
        (true, _) => line_key,
        (false, true) => table,
        (false, false) => format!("{table}.{line_key}"),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits between `a` and `b`: insertions, deletions, substitutions and swaps of two
/// neighbours (`wbe` is one edit from `web`, the commonest typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                cur[j + 1] = cur[j + 1].min(before[j - 1] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_of_two_letters_is_one_edit() {
        assert_eq!(edit_distance("wbe", "web"), 1);
        assert_eq!(edit_distance("web", "web"), 0);
        assert_eq!(edit_distance("intances", "instances"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
        assert_eq!(closest("wbe", &["web", "legacy"]), Some("web"));
    }

    #[test]
    fn display_with_and_without_position() {
        let err = ConfigError {
            file: "herd.toml".into(),
            line: 12,
            col: 12,
            key: "app[0].health.interval".into(),
            message: "invalid duration \"2x\": unknown unit \"x\"".into(),
            hint: Some("use a number with ms, s, m, h or d, e.g. \"2s\"".into()),
        };
        assert_eq!(
            err.to_string(),
            "herd.toml:12:12: app[0].health.interval: invalid duration \"2x\": unknown unit \"x\"\n  hint: use a number with ms, s, m, h or d, e.g. \"2s\""
        );
        let quick = ConfigError {
            file: "command line".into(),
            line: 0,
            col: 0,
            key: "--name".into(),
            message: "bad".into(),
            hint: None,
        };
        assert_eq!(quick.to_string(), "command line: --name: bad");
        let all = ConfigErrors(vec![err.clone(), quick]);
        assert_eq!(all.to_string().lines().count(), 3);
    }

    #[test]
    fn locate_lines_and_columns() {
        let src = Source::file("f", "a = 1\nbé = 2\n");
        assert_eq!(src.locate(0), (1, 1));
        assert_eq!(src.locate(4), (1, 5));
        assert_eq!(src.locate(6), (2, 1));
        // column counts characters, not bytes: "bé = " is 5 chars / 6 bytes
        assert_eq!(src.locate(12), (2, 6));
        assert_eq!(src.locate(9999), (3, 1));
        assert_eq!(Source::synthetic("x").locate(5), (0, 0));
    }

    #[test]
    fn guesses_keys_for_syntax_errors() {
        let text =
            "[gateway]\nlisten = \"x\"\n[[app]]\nname = \"a\"\n[[app]]\nname = \"b\n[app.health]\n";
        let off = text.find("name = \"b").unwrap() + 8;
        assert_eq!(guess_key(text, off), "app[1].name");
        let off = text.find("listen").unwrap();
        assert_eq!(guess_key(text, off), "gateway.listen");
        assert_eq!(guess_key("x = 1", 0), "x");
    }

    #[test]
    fn foreign_names_point_at_herds() {
        let (message, hint) = explain_serde_message(
            "unknown field `max_memory_restart`, expected one of `name`, `max_memory`",
            "app[0]",
        );
        assert_eq!(message, "unknown key \"max_memory_restart\"");
        assert_eq!(
            hint.as_deref(),
            Some("PM2's \"max_memory_restart\" is \"max_memory\" in herd; valid keys here: name, max_memory")
        );
        // Only where herd's key is valid.
        let (_, hint) =
            explain_serde_message("unknown field `inter`, expected `path`", "app[0].health");
        assert_eq!(hint.as_deref(), Some("valid keys here: path"));
        // nginx's and HAProxy's names, where herd's key is valid, and a table's way otherwise.
        let hint_for = |field: &str, valid: &str| {
            explain_serde_message(
                &format!("unknown field `{field}`, expected one of {valid}"),
                "gateway",
            )
            .1
            .unwrap()
        };
        assert!(hint_for("keepalive_timeout", "`listen`, `idle_timeout`")
            .starts_with("nginx's \"keepalive_timeout\" is \"idle_timeout\" in herd"));
        assert!(hint_for("timeout_server", "`response_timeout`")
            .starts_with("HAProxy's \"timeout_server\" is \"response_timeout\" in herd"));
        assert!(hint_for("ssl_certificate", "`cert`, `key`")
            .starts_with("nginx's \"ssl_certificate\" is \"cert\" in herd"));
        assert!(hint_for("ssl_certificate", "`listen`")
            .starts_with("nginx's \"ssl_certificate\": in herd, cert in a [gateway.tls] table"));
        assert!(hint_for("proxy_pass", "`listen`").contains("[[route]]"));
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("intervall", &["interval", "timeout"]),
            Some("interval")
        );
        assert_eq!(
            closest("instance", &["instances", "name"]),
            Some("instances")
        );
        assert_eq!(closest("zzz", &["interval", "timeout"]), None);
    }
}
