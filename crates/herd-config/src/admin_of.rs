//! Where a config file's admin API is, read leniently (only `[admin] listen` and `token`), so
//! the CLI run beside a `herd.toml` talks to that herd even while the file has an error
//! elsewhere (a reload of it is then refused, and the herd keeps its running config).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The admin API a config file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminOf {
    /// `http://HOST:PORT` to reach it from this machine (a wildcard listen is reached on
    /// loopback).
    pub url: String,
    /// `[admin] token`, if the file sets one.
    pub token: Option<String>,
}

/// The address a client on this machine dials to reach a listener on `addr`: a wildcard
/// (`0.0.0.0`, `[::]`) is not an address to connect to, so it becomes loopback of its family.
#[must_use]
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `[admin]` of the TOML file at `path`: `None` when the file is missing, unreadable, not
/// TOML or has no `[admin] listen` (herd's default listen then applies).
#[must_use]
pub fn admin_of(path: &Path) -> Option<AdminOf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let admin = table.get("admin")?.as_table()?;
    let listen: SocketAddr = admin.get("listen")?.as_str()?.parse().ok()?;
    Some(AdminOf {
        url: format!("http://{}", dialable(listen)),
        token: admin
            .get("token")
            .and_then(toml::Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_dialled_on_loopback() {
        let got = |a: &str| dialable(a.parse().unwrap()).to_string();
        assert_eq!(got("0.0.0.0:9091"), "127.0.0.1:9091");
        assert_eq!(got("[::]:9091"), "[::1]:9091");
        assert_eq!(got("10.0.0.5:9091"), "10.0.0.5:9091");
    }

    #[test]
    fn reads_listen_and_token_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herd.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:31490\"\ntoken = \"abcdefghijklmnopqrstuvwx\"\n[[app]]\nbroken = [",
        )
        .unwrap();
        assert_eq!(admin_of(&path), None, "not TOML");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:31490\"\ntoken = \"abcdefghijklmnopqrstuvwx\"\n[[app]]\nnonsense = 1\n",
        )
        .unwrap();
        assert_eq!(
            admin_of(&path),
            Some(AdminOf {
                url: "http://127.0.0.1:31490".into(),
                token: Some("abcdefghijklmnopqrstuvwx".into()),
            })
        );
        std::fs::write(&path, "[gateway]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(admin_of(&path), None);
        assert_eq!(admin_of(&dir.path().join("missing.toml")), None);
    }
}
