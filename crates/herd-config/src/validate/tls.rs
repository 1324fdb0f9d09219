//! `[gateway.tls]` and its `[[gateway.tls.sni]]` entries: the form only; the files are read
//! when the gateway starts.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{resolve, Validator};
use crate::model::{SniCert, Tls};
use crate::raw::{RawTls, Str};

const HOST_HINT: &str = "e.g. host = \"api.example.com\", or \"*.example.com\" for every name one \
    label below it (api.example.com, not example.com nor a.b.example.com)";

impl Validator<'_> {
    pub(super) fn tls(&mut self, t: &Spanned<RawTls>) -> Option<Tls> {
        let raw = t.get_ref();
        let cert = self.pem_path(raw.cert.as_ref(), &t.span(), "gateway.tls.cert");
        let key = self.pem_path(raw.key.as_ref(), &t.span(), "gateway.tls.key");
        let mut sni = Vec::new();
        let mut seen = HashSet::new();
        for (i, e) in raw.sni.iter().enumerate() {
            let r = e.get_ref();
            let key_of = |k: &str| format!("gateway.tls.sni[{i}].{k}");
            let host = self.sni_host(r.host.as_ref(), &e.span(), &key_of("host"));
            let host = host.filter(|h| {
                let fresh = seen.insert(h.clone());
                if !fresh {
                    let span = r.host.as_ref().map_or_else(|| e.span(), Spanned::span);
                    self.err(
                        &span,
                        &key_of("host"),
                        format!("host {h:?} has a certificate already"),
                        Some("one [[gateway.tls.sni]] entry per host name".into()),
                    );
                }
                fresh
            });
            let c = self.pem_path(r.cert.as_ref(), &e.span(), &key_of("cert"));
            let k = self.pem_path(r.key.as_ref(), &e.span(), &key_of("key"));
            if let (Some(host), Some(cert), Some(key)) = (host, c, k) {
                sni.push(SniCert { host, cert, key });
            }
        }
        Some(Tls {
            cert: cert?,
            key: key?,
            sni,
        })
    }

    /// A server name, lowercase, without a trailing dot: labels separated by single dots, and
    /// `*` only as a whole first label followed by at least two more (as certificates allow).
    fn sni_host(&mut self, v: Option<&Str>, section: &Range<usize>, key: &str) -> Option<String> {
        let Some(v) = v else {
            self.err(section, key, "missing host", Some(HOST_HINT.into()));
            return None;
        };
        let host = v
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let problem = if host.is_empty() {
            Some("host must not be empty")
        } else if labels.iter().any(|l| l.is_empty()) {
            Some("a host name has no empty labels")
        } else if labels.iter().skip(1).any(|l| l.contains('*'))
            || (labels[0].len() > 1 && labels[0].contains('*'))
        {
            Some("'*' may only be the whole first label")
        } else if labels[0] == "*" && labels.len() < 3 {
            Some("a wildcard needs at least two labels after '*.' (clients refuse *.com)")
        } else if host.parse::<std::net::IpAddr>().is_ok()
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        {
            // RFC 6066 §3: SNI carries host names only; a client connecting by address sends
            // none, and gets the default certificate.
            Some("an IP address is never sent as SNI (clients send host names only); the default cert/key serves clients that connect by address")
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.err(
                    &v.span(),
                    key,
                    format!("bad host {host:?}: {p}"),
                    Some(HOST_HINT.into()),
                );
                None
            }
            None => Some(host),
        }
    }

    fn pem_path(&mut self, v: Option<&Str>, section: &Range<usize>, key: &str) -> Option<PathBuf> {
        match v {
            Some(s) if !s.get_ref().trim().is_empty() => {
                Some(resolve(self.base_dir, Path::new(s.get_ref())))
            }
            Some(s) => {
                self.err(&s.span(), key, "path must not be empty", None);
                None
            }
            None => {
                self.err(
                    section,
                    key,
                    format!("missing {}", key.rsplit('.').next().unwrap_or(key)),
                    Some(
                        "a PEM file, relative to the config file, e.g. cert = \"tls/cert.pem\""
                            .into(),
                    ),
                );
                None
            }
        }
    }
}
