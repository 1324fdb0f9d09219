//! Arbitrary `[[route]]` tables (hosts with wildcards, prefixes, exact paths, regexes, methods,
//! header matchers, rewrites) go through validation and the rule compiler, then arbitrary
//! requests through the matcher: invalid tables must come back as config errors, valid ones
//! must route every request to one of their apps or to none, never panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Route {
    name: Option<String>,
    host: Option<String>,
    path_prefix: Option<String>,
    path: Option<String>,
    path_regex: Option<String>,
    methods: Option<Vec<String>>,
    header: Option<(String, Option<String>)>,
    websocket: Option<bool>,
    strip_prefix: Option<String>,
    app_b: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    routes: Vec<Route>,
    requests: Vec<(Option<String>, Vec<u8>, String, Vec<(Vec<u8>, Vec<u8>)>)>,
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|input: Input| {
    if input.routes.len() > 16 || input.requests.len() > 32 {
        return;
    }
    let mut text = String::from(
        "[[app]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[app]]\nname = \"b\"\nservers = [\"127.0.0.1:2\"]\n",
    );
    for r in &input.routes {
        text.push_str("[[route]]\n");
        let mut key = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                text.push_str(&format!("{k} = {}\n", q(v)));
            }
        };
        key("name", &r.name);
        key("host", &r.host);
        key("path_prefix", &r.path_prefix);
        key("path", &r.path);
        key("path_regex", &r.path_regex);
        key("strip_prefix", &r.strip_prefix);
        if let Some(m) = &r.methods {
            let list: Vec<String> = m.iter().map(|s| q(s)).collect();
            text.push_str(&format!("methods = [{}]\n", list.join(", ")));
        }
        if let Some((name, value)) = &r.header {
            match value {
                Some(v) => text.push_str(&format!(
                    "header = {{ name = {}, value = {} }}\n",
                    q(name),
                    q(v)
                )),
                None => text.push_str(&format!("header = {{ name = {} }}\n", q(name))),
            }
        }
        if let Some(w) = r.websocket {
            text.push_str(&format!("websocket = {w}\n"));
        }
        text.push_str(if r.app_b {
            "app = \"b\"\n"
        } else {
            "app = \"a\"\n"
        });
    }
    let Ok(config) = herd_config::parse(&text, "fuzz.toml", std::path::Path::new(".")) else {
        return;
    };
    let requests: Vec<herd_proxy::fuzz::Request> = input
        .requests
        .into_iter()
        .map(|(host, method, path, headers)| herd_proxy::fuzz::Request {
            host,
            method,
            path,
            headers,
        })
        .collect();
    let _ = herd_proxy::fuzz::route(&config, &requests);
});
