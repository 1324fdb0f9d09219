//! A listening socket herd could not open, said the way the user set it: the config key, or
//! quick mode's flag, with what to do about the usual causes.

use std::io::ErrorKind;
use std::net::SocketAddr;

/// Where an address came from: its config key, and the flag that sets it in quick mode
/// (`None`: quick mode cannot set it).
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) key: &'static str,
    pub(crate) flag: Option<&'static str>,
    /// Quick mode (no config file): the flag is what the user knows.
    pub(crate) quick: bool,
}

impl Origin {
    pub(crate) fn new(key: &'static str, flag: Option<&'static str>, quick: bool) -> Self {
        Origin { key, flag, quick }
    }

    fn name(self) -> &'static str {
        match self.flag {
            Some(flag) if self.quick => flag,
            _ => self.key,
        }
    }

    fn how_to_change(self) -> String {
        match self.flag {
            Some(flag) if self.quick => format!("choose another with {flag}"),
            _ => format!("choose another in {}", self.key),
        }
    }
}

/// The error for `addr` that failed with `e`: what, where (key or flag), and a hint for an
/// address in use, a privileged port, or an address this machine does not have.
pub(crate) fn error(addr: SocketAddr, origin: Origin, e: &std::io::Error) -> anyhow::Error {
    let port = addr.port();
    let hint = match e.kind() {
        ErrorKind::AddrInUse => Some(format!(
            "another process listens on {addr} (`ss -ltnp 'sport = :{port}'` shows which): stop it, or {}",
            origin.how_to_change()
        )),
        ErrorKind::PermissionDenied if port < 1024 => Some(format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE), or {}",
            origin.how_to_change()
        )),
        ErrorKind::AddrNotAvailable => Some(format!(
            "{} is not an address of this machine (`ip -brief addr` lists them; 0.0.0.0 is every one): {}",
            addr.ip(),
            origin.how_to_change()
        )),
        _ => None,
    };
    let mut text = format!("failed to listen on {addr} ({}): {e}", origin.name());
    if let Some(hint) = hint {
        text.push_str("\n  hint: ");
        text.push_str(&hint);
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_flag_in_quick_mode_and_the_key_otherwise() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let taken = std::io::Error::from(ErrorKind::AddrInUse);
        let quick = error(
            addr,
            Origin::new("gateway.listen", Some("--port"), true),
            &taken,
        );
        let text = format!("{quick:#}");
        assert!(
            text.starts_with("failed to listen on 127.0.0.1:8080 (--port): "),
            "{text}"
        );
        assert!(text.contains("choose another with --port"), "{text}");
        let file = error(
            addr,
            Origin::new("gateway.listen", Some("--port"), false),
            &taken,
        );
        let text = format!("{file:#}");
        assert!(text.contains("(gateway.listen)"), "{text}");
        assert!(text.contains("choose another in gateway.listen"), "{text}");
        let low: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let denied = std::io::Error::from(ErrorKind::PermissionDenied);
        let text = format!(
            "{:#}",
            error(low, Origin::new("gateway.listen", None, false), &denied)
        );
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        let other = std::io::Error::from(ErrorKind::Other);
        let text = format!(
            "{:#}",
            error(low, Origin::new("admin.listen", None, false), &other)
        );
        assert!(!text.contains("hint"), "{text}");
    }
}
