//! Where a config file's admin API is, read leniently (only `[admin] listen` and `token`), so
//! the CLI run beside a `herd.toml` talks to that herd even while the file has an error
//! elsewhere (a reload of it is then refused, and the herd keeps its running config). A file
//! that is not TOML at all is an error: which herd it belongs to cannot be told.

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

/// `[admin]` of the TOML file at `path`: `Ok(None)` when there is no such file, or it has no
/// `[admin]` table (herd's defaults then apply); an `[admin]` table without `listen` is herd's
/// default address (`127.0.0.1:9090`) with the table's token.
///
/// # Errors
/// The file is there but cannot be read, is not TOML, or its `[admin] listen` is not an
/// address: the CLI cannot tell which herd the file belongs to, and guessing the default
/// address could reach another herd (or none, and blame it).
pub fn admin_of(path: &Path) -> Result<Option<AdminOf>, AdminOfError> {
    let name = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AdminOfError::Unreadable(format!("cannot read {name}: {e}"))),
    };
    admin_of_text(&text, &name.to_string()).map_err(AdminOfError::Invalid)
}

/// Why [`admin_of`] could not tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOfError {
    /// The file is there but this user cannot read it (a 0600 file holding the token).
    Unreadable(String),
    /// It is not TOML, or its `[admin]` is malformed.
    Invalid(String),
}

impl std::fmt::Display for AdminOfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminOfError::Unreadable(m) | AdminOfError::Invalid(m) => f.write_str(m),
        }
    }
}

fn admin_of_text(text: &str, name: &str) -> Result<Option<AdminOf>, String> {
    // Where and what, without the line itself (it may hold the token).
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(
            "{name}:{line}:{col}: {name} is not valid TOML: {}",
            e.message().trim_end()
        )
    })?;
    let Some(admin) = table.get("admin") else {
        return Ok(None);
    };
    let admin = admin
        .as_table()
        .ok_or_else(|| format!("{name}: admin is not a table: write it as [admin]"))?;
    let listen: SocketAddr = match admin.get("listen") {
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, 9090)),
        Some(v) => v
            .as_str()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                format!("{name}: admin.listen is not an address such as \"127.0.0.1:9090\"")
            })?,
    };
    Ok(Some(AdminOf {
        url: format!("http://{}", dialable(listen)),
        token: admin
            .get("token")
            .and_then(toml::Value::as_str)
            .map(str::to_owned),
    }))
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
        let err = admin_of(&path).unwrap_err().to_string();
        assert!(
            err.contains("not valid TOML") && err.contains("herd.toml:5:11:"),
            "{err}"
        );
        std::fs::write(&path, "[admin]\ntoken = \"abcdefghijklmnopqrstuvwx\n").unwrap();
        let err = admin_of(&path).unwrap_err().to_string();
        assert!(
            !err.contains("abcdefghij"),
            "the line is not repeated: {err}"
        );
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:31490\"\ntoken = \"abcdefghijklmnopqrstuvwx\"\n[[app]]\nnonsense = 1\n",
        )
        .unwrap();
        assert_eq!(
            admin_of(&path),
            Ok(Some(AdminOf {
                url: "http://127.0.0.1:31490".into(),
                token: Some("abcdefghijklmnopqrstuvwx".into()),
            }))
        );
        std::fs::write(&path, "[gateway]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(admin_of(&path), Ok(None));
        assert_eq!(admin_of(&dir.path().join("missing.toml")), Ok(None));
        // A token without listen is for herd's default address.
        std::fs::write(&path, "[admin]\ntoken = \"abcdefghijklmnopqrstuvwx\"\n").unwrap();
        assert_eq!(
            admin_of(&path),
            Ok(Some(AdminOf {
                url: "http://127.0.0.1:9090".into(),
                token: Some("abcdefghijklmnopqrstuvwx".into()),
            }))
        );
        std::fs::write(&path, "[admin]\nlisten = \"nowhere\"\n").unwrap();
        assert!(admin_of(&path)
            .unwrap_err()
            .to_string()
            .contains("admin.listen"));
        // As herd reads it: spaces around the address are fine.
        std::fs::write(&path, "[admin]\nlisten = \" 127.0.0.1:9095 \"\n").unwrap();
        assert_eq!(
            admin_of(&path).unwrap().unwrap().url,
            "http://127.0.0.1:9095"
        );
    }
}
