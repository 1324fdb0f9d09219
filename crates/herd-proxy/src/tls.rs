//! TLS termination (rustls with the `ring` provider): the certificates of `[gateway.tls]`, the
//! SNI resolver that picks one per handshake, and their reload.
//!
//! [`TlsCerts`] holds the loaded certificates behind an `ArcSwap`: the resolver reads them without
//! a lock on every handshake, and [`TlsCerts::reload`] swaps in a complete new set, or nothing if
//! any file fails to load (the old set stays and the error is returned for the caller to log).
//! Established connections keep the session they negotiated; only new handshakes see new
//! certificates, so a reload drops no connection.
//!
//! Reload triggers: SIGHUP (`Gateway::reload_tls`) and a watcher that compares the files'
//! modification times and sizes every [`WATCH_PERIOD`]. Polling a handful of files is cheap and
//! works the same on every platform and with the symlink swaps of Kubernetes secrets, which
//! inotify-based watchers miss; the price is up to two seconds of delay.
//!
//! ALPN offers `h2` then `http/1.1`; hyper-util's auto builder then reads the HTTP/2 preface or
//! an HTTP/1 request from the decrypted stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use herd_config::Tls;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks at the certificate files.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// Why certificates could not be loaded. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCert { path: PathBuf },
    #[error("no PEM private key in {}", path.display())]
    NoKey { path: PathBuf },
    #[error("{} holds an encrypted private key, which herd cannot use (it would need the passphrase at every start); write it decrypted with `openssl pkey -in {0} -out key.pem` and keep that file readable by herd alone", path.display())]
    EncryptedKey { path: PathBuf },
    #[error("unusable private key {} (for {}): {reason}", key.display(), cert.display())]
    BadKey {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("failed to set up TLS: {0}")]
    Setup(String),
}

/// Marker put in the extensions of requests that arrived over TLS (`X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTls;

/// Certificates read from the files and not yet in force (see [`TlsCerts::read`]), with the
/// `[gateway.tls]` table they were read by when it is a new one.
pub struct StagedCerts(CertSet, Option<Tls>);

#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    /// Exact names.
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// The certificate for a handshake's server name: an exact entry, else a wildcard entry
    /// for the name's parent (one label, as certificates match: `*.example.com` covers
    /// `api.example.com`, not `example.com` nor `a.b.example.com`), else the default.
    fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        let name = name.trim_end_matches('.');
        self.by_host
            .get(name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .unwrap_or(&self.default)
    }
}

/// The certificates in force and where they come from.
#[derive(Debug)]
pub struct TlsCerts {
    /// The table in force: a config reload may name other files (a new SNI entry).
    config: ArcSwap<Tls>,
    current: ArcSwap<CertSet>,
    /// Modification time and size of each file when the watcher last looked.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

/// Every certificate and key file of a `[gateway.tls]` table.
fn paths_of(config: &Tls) -> impl Iterator<Item = &Path> {
    [config.cert.as_path(), config.key.as_path()]
        .into_iter()
        .chain(
            config
                .sni
                .iter()
                .flat_map(|s| [s.cert.as_path(), s.key.as_path()]),
        )
}

/// Each file's modification time and size (`None`: unreadable now).
fn stamps_of<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

impl TlsCerts {
    /// Loads every certificate and key named in `config`.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or whose key does not match its
    /// certificate; the error names the file.
    pub fn load(config: &Tls) -> Result<Arc<Self>, TlsError> {
        // Stamps first, files second: a file replaced in between then differs from its stamp
        // and is read again at the next look, instead of its old content staying for good.
        let stamps = stamps_of(paths_of(config));
        let set = load_set(config)?;
        Ok(Arc::new(TlsCerts {
            config: ArcSwap::from_pointee(config.clone()),
            current: ArcSwap::from_pointee(set),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Reads the files again and swaps the new set in atomically. New handshakes use it;
    /// established connections are untouched.
    ///
    /// # Errors
    /// As [`TlsCerts::load`]; the certificates in force then stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let staged = self.read()?;
        self.install(staged);
        Ok(())
    }

    /// Reads the files again without swapping them in: a config reload reads them before it
    /// changes anything, so that a bad file refuses the whole reload.
    ///
    /// # Errors
    /// As [`TlsCerts::load`].
    pub fn read(&self) -> Result<StagedCerts, TlsError> {
        load_set(&self.config.load()).map(|set| StagedCerts(set, None))
    }

    /// Reads the files a new `[gateway.tls]` table names (a config reload that adds or changes
    /// SNI entries or paths), without swapping them in; installing them adopts the table, and
    /// the watcher then watches its files.
    ///
    /// # Errors
    /// As [`TlsCerts::load`].
    pub fn read_config(&self, config: &Tls) -> Result<StagedCerts, TlsError> {
        if **self.config.load() == *config {
            return self.read();
        }
        load_set(config).map(|set| StagedCerts(set, Some(config.clone())))
    }

    /// Swaps in certificates [`TlsCerts::read`] loaded, for new handshakes.
    pub fn install(&self, staged: StagedCerts) {
        let StagedCerts(set, config) = staged;
        if let Some(config) = config {
            let stamps = stamps_of(paths_of(&config));
            self.config.store(Arc::new(config));
            *self
                .stamps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = stamps;
        }
        self.current.store(Arc::new(set));
    }

    /// A rustls acceptor offering ALPN `h2` and `http/1.1`, resolving certificates by SNI.
    ///
    /// # Errors
    /// Only if the crypto provider supports no safe protocol version (not with `ring`).
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Setup(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        stamps_of(paths_of(&self.config.load()))
    }

    /// Reloads when a file's modification time or size changes, until `shutdown`. A failed
    /// reload (say, the certificate written but not yet its key) is logged and tried again at
    /// the next change.
    pub(crate) async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.stamps();
            {
                let mut seen = self
                    .stamps
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *seen == now {
                    continue;
                }
                *seen = now;
            }
            match self.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded (files changed)"),
                Err(e) => {
                    tracing::error!(error = %e, "failed to reload TLS certificates; keeping the old ones");
                }
            }
        }
    }
}

fn load_set(config: &Tls) -> Result<CertSet, TlsError> {
    let default = load_pair(&config.cert, &config.key)?;
    let (mut by_host, mut wildcard) = (HashMap::new(), HashMap::new());
    for s in &config.sni {
        let host = s.host.to_ascii_lowercase();
        let pair = load_pair(&s.cert, &s.key)?;
        match host.strip_prefix("*.") {
            Some(parent) => wildcard.insert(parent.to_owned(), pair),
            None => by_host.insert(host, pair),
        };
    }
    Ok(CertSet {
        default,
        by_host,
        wildcard,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = read(cert)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::Read {
            path: cert.to_owned(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_owned(),
        });
    }
    let pem = read(key)?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|error| TlsError::Read {
            path: key.to_owned(),
            error,
        })?
        .ok_or_else(|| {
            // rustls-pemfile skips an `ENCRYPTED PRIVATE KEY` block as unknown.
            if pem.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
                TlsError::EncryptedKey {
                    path: key.to_owned(),
                }
            } else {
                TlsError::NoKey {
                    path: key.to_owned(),
                }
            }
        })?;
    let bad = |e: &dyn std::fmt::Display| TlsError::BadKey {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    };
    let signing = provider::sign::any_supported_type(&der).map_err(|e| bad(&e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| bad(&e))?;
    Ok(Arc::new(certified))
}

/// Picks the certificate for the SNI name of a handshake (exact, then wildcard,
/// case-insensitive), else the default one.
#[derive(Debug)]
struct Resolver(Arc<TlsCerts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.current.load();
        Some(Arc::clone(set.pick(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    fn key(name: &str) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let signing = provider::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signing))
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let (default, api, wild) = (
            key("localhost"),
            key("api.example.com"),
            key("*.example.com"),
        );
        let set = CertSet {
            default: Arc::clone(&default),
            by_host: HashMap::from([("api.example.com".to_owned(), Arc::clone(&api))]),
            wildcard: HashMap::from([("example.com".to_owned(), Arc::clone(&wild))]),
        };
        let is = |name: Option<&str>, want: &Arc<CertifiedKey>| {
            assert!(Arc::ptr_eq(set.pick(name), want), "{name:?}");
        };
        is(Some("api.example.com"), &api);
        is(Some("API.Example.COM."), &api);
        is(Some("www.example.com"), &wild);
        is(Some("a.b.example.com"), &default);
        is(Some("example.com"), &default);
        is(Some("other.test"), &default);
        is(None, &default);
    }
}
