//! Entry points for the fuzz targets in `crates/herd-proxy/fuzz`: the routing rule compiler and
//! matcher, and the request-smuggling guard. Not an API: hidden from the docs, stable only as
//! long as the fuzz targets need it.

use std::sync::Arc;

use herd_config::Config;
use herd_core::StatsRegistry;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::framing::{Scanner, Verdict};
use crate::route::{RequestView, RouteTable};

/// One request to route: raw parts, taken as far as `http` accepts them.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub host: Option<String>,
    pub method: Vec<u8>,
    pub path: String,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Compiles `config`'s routes and matches each request; returns the app index each one went to.
/// Checks the table's invariants on the way (a match names an app of the config).
#[must_use]
pub fn route(config: &Config, requests: &[Request]) -> Vec<Option<usize>> {
    let names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let table = RouteTable::compile(
        &config.routes,
        &names,
        crate::route::default_app(config),
        &StatsRegistry::default(),
    );
    requests
        .iter()
        .map(|r| {
            let method = Method::from_bytes(&r.method).unwrap_or(Method::GET);
            let mut headers = HeaderMap::new();
            for (k, v) in &r.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                    headers.append(k, v);
                }
            }
            let found = table.find(&RequestView {
                host: r.host.as_deref(),
                method: &method,
                path: &r.path,
                headers: &headers,
            });
            let app = found.map(|m| m.app);
            assert!(
                app.is_none_or(|a| a < names.len().max(1)),
                "route to app {app:?} of {}",
                names.len()
            );
            app
        })
        .collect()
}

/// Feeds the bytes of one client connection to the framing guard, in the given chunks; returns
/// why the first refused request was refused, if one was.
#[must_use]
pub fn framing(max_head: usize, chunks: &[&[u8]]) -> Option<&'static str> {
    let verdict = Arc::new(Verdict::default());
    let mut scanner = Scanner::new(max_head, 100, Arc::clone(&verdict));
    for c in chunks {
        scanner.feed(c);
    }
    (0..1024).find_map(|_| verdict.next_request())
}
