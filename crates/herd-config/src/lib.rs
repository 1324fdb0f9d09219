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

mod cron;
mod defaults;
mod error;
pub mod model;
mod quick;
mod raw;
mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use quick::quick;
pub use units::{parse_duration, parse_size};

use error::Source;

/// Reads, parses and validates the config file at `path`.
///
/// Relative paths in the file (`cwd`, `[logs] dir`) resolve against the file's directory.
///
/// # Errors
/// A read error, the first TOML syntax/unknown-key/type error, or every validation error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        let hint = (err.kind() == std::io::ErrorKind::NotFound).then(|| {
            "create it (see examples/herd.toml), or run `herd up -- CMD...` without a config file"
                .to_owned()
        });
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
    parse(&text, &file, &base_dir)
}

/// Parses and validates config text. `file` is only used in error messages; relative paths
/// resolve against `base_dir`.
///
/// # Errors
/// The first TOML syntax/unknown-key/type error, or every validation error, in file order.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let src = Source::file(file, text);
    let raw = raw::from_str(text).map_err(|err| ConfigErrors(vec![src.serde_error(&err)]))?;
    validate::validate(&raw, &src, base_dir)
}

#[cfg(test)]
mod alerts_tests;
#[cfg(test)]
mod data_plane_tests;
#[cfg(test)]
mod lb_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod scaling_tests;
#[cfg(test)]
mod tests;
