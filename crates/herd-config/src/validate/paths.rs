//! Route and rate-limit paths that no request could match: the gateway matches the normalised
//! request path (see `crate::path`), so a configured path that normalisation would change
//! (`/%7Euser`, `/a//b`, `/a/./b`) is a route that silently never applies.

use super::Validator;
use crate::path::{exact_unmatchable, prefix_unmatchable};
use crate::raw::{RawConfig, Str};

impl Validator<'_> {
    pub(super) fn paths_normalised(&mut self, raw: &RawConfig, merge_slashes: bool) {
        for (i, r) in raw.route.iter().enumerate() {
            let r = r.get_ref();
            self.prefix_matchable(
                &format!("route[{i}].path_prefix"),
                r.path_prefix.as_ref(),
                merge_slashes,
            );
            if let Some(path) = &r.path {
                let key = format!("route[{i}].path");
                match exact_unmatchable(path.get_ref(), merge_slashes) {
                    None => {}
                    Some(Ok(clean)) => self.err(
                        &path.span(),
                        &key,
                        format!("path \"{}\" can never match: request paths are normalised before matching, and this one becomes \"{clean}\"", path.get_ref()),
                        Some(format!("write path = \"{clean}\"{}", slash_note(path.get_ref(), merge_slashes))),
                    ),
                    Some(Err(why)) => self.err(
                        &path.span(),
                        &key,
                        format!("path \"{}\" can never match: {why}", path.get_ref()),
                        Some("write the path as a client sends it, with valid %XX escapes and no \"..\" above the root".into()),
                    ),
                }
            }
        }
        for (i, r) in raw.rate_limit.iter().enumerate() {
            let key = format!("rate_limit[{i}].path_prefix");
            self.prefix_matchable(&key, r.get_ref().path_prefix.as_ref(), merge_slashes);
        }
    }

    fn prefix_matchable(&mut self, key: &str, prefix: Option<&Str>, merge_slashes: bool) {
        let Some(prefix) = prefix else { return };
        if !prefix.get_ref().starts_with('/') {
            return; // reported on its own
        }
        if let Some(clean) = prefix_unmatchable(prefix.get_ref(), merge_slashes) {
            self.err(
                &prefix.span(),
                key,
                format!(
                    "path_prefix \"{}\" can never match: request paths are normalised before matching (escapes of letters, digits and -._~ decoded, %2F read as '/', other escapes upper-cased, \".\" and \"..\" resolved{}), so none starts with it",
                    prefix.get_ref(),
                    if merge_slashes { ", runs of '/' merged" } else { "" }
                ),
                Some(format!("write path_prefix = \"{clean}\"{}", slash_note(prefix.get_ref(), merge_slashes))),
            );
        }
    }
}

fn slash_note(path: &str, merge_slashes: bool) -> &'static str {
    if merge_slashes && path.contains("//") {
        " (to match '//' as sent, set [gateway] merge_slashes = false)"
    } else {
        ""
    }
}
