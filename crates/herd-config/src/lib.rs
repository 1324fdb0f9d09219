//! herd's configuration: the `herd.toml` file format, its validation, and the typed model the
//! rest of herd runs on.
//!
//! Reading a config goes through three layers:
//!
//! 1. `raw`: serde structs that mirror the TOML layout exactly. Every table denies unknown
//!    keys and every value keeps its byte span, so problems can be reported as `file:line:col`.
//! 2. `validate` (with `validate/app.rs` for one `[[app]]`, `validate/scaling.rs` for its
//!    `[app.scaling]`, `validate/alerts.rs` for `[alerts]`/`[[alert]]` and `validate/values.rs`
//!    for single values): parses durations, sizes,
//!    counts, port ranges (`units`) and cron expressions (`cron`), fills in defaults
//!    (`defaults`), resolves relative paths against the config file's directory and route → app
//!    references, and collects *all* problems as [`ConfigError`]s (`error`: location, dotted key,
//!    message, hint).
//! 3. [`model`]: the validated, typed [`Config`]. Runtime code only ever sees this.
//!
//! Entry points: [`load`] (a file), [`parse`] (text), and [`quick`] (the no-file
//! `herd up -- CMD...` mode, validated through the same path). The reference for every key is
//! `docs/config.md`; `examples/herd.toml` is a commented example using all of them.

mod admin_of;
mod cron;
mod defaults;
mod error;
pub mod model;
mod path;
mod quick;
mod raw;
mod units;
mod unknown;
mod validate;

use std::path::{Path, PathBuf};

pub use admin_of::{admin_of, dialable, AdminOf, AdminOfError};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use path::{normalize_path, path_needs_normalizing, routing_path};
pub use quick::{quick, Quick};
pub use units::{parse_duration, parse_size};

use error::Source;

/// Reads, parses and validates the config file at `path`.
///
/// Relative paths in the file (`cwd`, `[logs] dir`) resolve against the file's directory.
///
/// # Errors
/// A read error; every unknown key, then the first TOML syntax or type error, or every
/// validation error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &Env::from_process())
}

/// What herd reads from its environment into its config: `HERD_ADMIN_TOKEN`, the admin token
/// when the file sets none (so a token can come from a secret store rather than the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub admin_token: Option<String>,
}

impl Env {
    /// This process's environment (an empty `HERD_ADMIN_TOKEN` counts as unset).
    #[must_use]
    pub fn from_process() -> Env {
        Env {
            admin_token: std::env::var("HERD_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }
    }
}

/// [`load`] with the environment given.
///
/// # Errors
/// As [`load`].
pub fn load_with(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        let hint = match err.kind() {
            std::io::ErrorKind::NotFound => Some(
                "create it (see examples/herd.toml), or run `herd up -- CMD...` without a config file"
                    .to_owned(),
            ),
            _ if path.is_dir() => Some(format!(
                "{file} is a directory: name the file, e.g. -c {}",
                path.join("herd.toml").display()
            )),
            std::io::ErrorKind::PermissionDenied => {
                Some("let the user running herd read it (chmod, or run as its owner)".to_owned())
            }
            std::io::ErrorKind::InvalidData => {
                Some("a config file is UTF-8 TOML text".to_owned())
            }
            _ => None,
        };
        ConfigError {
            file: file.clone(),
            line: 0,
            col: 0,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
            hint,
        }
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = absolute
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    parse_with(&text, &file, &base_dir, env)
}

/// Parses and validates config text. `file` is only used in error messages; relative paths
/// resolve against `base_dir`.
///
/// # Errors
/// Every unknown key (up to 50), then the first TOML syntax or type error, or every validation
/// error, in file order.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    parse_with(text, file, base_dir, &Env::default())
}

/// [`parse`] with the environment given (see [`Env`]).
///
/// # Errors
/// As [`parse`].
pub fn parse_with(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &Env,
) -> Result<Config, ConfigErrors> {
    /// Enough for a config written for another tool; past it, the rest waits for the next run.
    const MAX_UNKNOWN: usize = 50;
    let src = Source::file(file, text);
    let mut unknown: Vec<ConfigError> = Vec::new();
    let mut working = std::borrow::Cow::Borrowed(text);
    loop {
        match raw::from_str(&working) {
            Ok(raw) if unknown.is_empty() => return validate::validate(&raw, &src, base_dir, env),
            Ok(raw) => {
                // Unknown keys, then what validation finds in the rest of the file. In a table
                // with an unknown key, only the values written there are checked: the unknown
                // key is most likely a misspelt one, and "needs warning or critical" after
                // "unknown key warn" says it twice; a bad value beside it is its own problem.
                let tables: Vec<String> = unknown
                    .iter()
                    .filter_map(|e| e.key.rsplit_once('.').map(|(t, _)| t.to_owned()))
                    .collect();
                let in_table = |key: &str| {
                    tables.iter().any(|t| {
                        key.strip_prefix(t.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                    })
                };
                let doc = toml_edit::ImDocument::parse(text).ok();
                let written = |key: &str| doc.as_ref().is_some_and(|d| unknown::is_value(d, key));
                let mut errors: Vec<ConfigError> = unknown;
                if let Err(more) = validate::validate(&raw, &src, base_dir, env) {
                    errors.extend(
                        more.0
                            .into_iter()
                            .filter(|e| !in_table(&e.key) || written(&e.key)),
                    );
                }
                errors.sort_by_key(|e| (e.line, e.col));
                return Err(ConfigErrors(errors));
            }
            Err(err) => {
                let error = src.serde_error(&err);
                let is_unknown = err.inner().message().starts_with("unknown field `");
                // A key blanked out by an earlier round is not the cause of a later type error,
                // so those are reported too; only the first error of any other kind ends the
                // collection.
                let next = match err.inner().span() {
                    Some(span) if is_unknown && unknown.len() < MAX_UNKNOWN => {
                        unknown::without_entry(&working, span.start)
                    }
                    _ => None,
                };
                unknown.push(error);
                match next {
                    Some(text) => working = std::borrow::Cow::Owned(text),
                    None => {
                        unknown.sort_by_key(|e| (e.line, e.col));
                        return Err(ConfigErrors(unknown));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod alerts_tests;
#[cfg(test)]
mod data_plane_tests;
#[cfg(test)]
mod lb_tests;
#[cfg(test)]
mod logs_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod scaling_tests;
#[cfg(test)]
mod tests;
