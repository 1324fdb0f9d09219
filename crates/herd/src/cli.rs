//! Command-line interface (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Turn one app process into a supervised, load-balanced fleet"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Run the gateway, the supervisor and the admin API (from herd.toml, or quick mode with `-- CMD`).
    Up(UpArgs),
    /// Validate a config file: exit 0, or print every error and exit 64.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "herd.toml")]
        config: PathBuf,
        /// Check the file alone: skip what only the machine that runs herd has (each app's
        /// `cwd` and program, the TLS certificates), e.g. in CI before a deploy.
        #[arg(long)]
        config_only: bool,
    },
    /// Show apps and instances of a running herd.
    Status(ClientArgs),
    /// Set the number of instances of an app: N, +N (add), -N (remove), max (one per core), or
    /// auto (drop the manual count: the autoscaler decides again).
    Scale {
        app: String,
        #[arg(allow_hyphen_values = true, value_parser = parse_count, value_name = "N|+N|-N|max|auto")]
        instances: Count,
        /// Why (recorded and logged).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rolling, start-first reload of an app (or all apps): no request fails. With `--config`:
    /// re-read herd.toml and apply it (as SIGHUP), printing what changed.
    Reload {
        app: Option<String>,
        /// Reload the config file instead of restarting instances (nginx `-s reload`).
        #[arg(long, conflicts_with = "app")]
        config: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replay a load trace through the autoscaler and report instance-hours, cost, unmet demand.
    Simulate(SimulateArgs),
    /// Print an app's instance logs.
    Logs {
        app: String,
        /// Keep following new output.
        #[arg(short, long)]
        follow: bool,
        /// Lines of history per log file.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Config file (default herd.toml); not with a command after `--` (quick mode).
    #[arg(short, long)]
    pub(crate) config: Option<PathBuf>,
    /// Quick mode: number of instances, or `max` (one per CPU core), or -1 (cores - 1).
    #[arg(short = 'i', long, allow_hyphen_values = true)]
    pub(crate) instances: Option<String>,
    /// Quick mode: gateway port on 127.0.0.1 [default: 8080].
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Quick mode: admin API address, or a port on 127.0.0.1 [default: 127.0.0.1:9090].
    #[arg(long, value_parser = parse_listen, value_name = "ADDR|PORT")]
    pub(crate) admin: Option<SocketAddr>,
    /// Quick mode: services API address (sessions, cache, queue, locks for the instances), or
    /// a port on 127.0.0.1 [default: 127.0.0.1:9091].
    #[arg(long, value_parser = parse_listen, value_name = "ADDR|PORT")]
    pub(crate) services: Option<SocketAddr>,
    /// Quick mode: the ports the instances get, e.g. 21000-21099 (default 20000-20999).
    #[arg(long, value_name = "FIRST-LAST")]
    pub(crate) port_range: Option<String>,
    /// Quick mode: app name (default: derived from the command).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Quick mode: the app serves no requests (a queue consumer, a script): no health
    /// checks, ready once running, not behind the gateway (worker = true in a file).
    #[arg(long)]
    pub(crate) worker: bool,
    /// The app's command and arguments (quick mode).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Config file with the app's [app.scaling] policy.
    #[arg(short, long, default_value = "herd.toml")]
    pub(crate) config: PathBuf,
    /// Load trace: CSV with a `time,rps` or `time,concurrency` header, time in seconds.
    #[arg(long)]
    pub(crate) trace: PathBuf,
    /// The app to simulate (default: the first with [app.scaling]).
    #[arg(long)]
    pub(crate) app: Option<String>,
    /// What one instance can serve (rps or concurrent requests, like the trace); default:
    /// 1.25 × the scaling target.
    #[arg(long)]
    pub(crate) capacity: Option<f64>,
    /// Time from starting an instance to it serving.
    #[arg(long, default_value = "10s")]
    pub(crate) start_time: String,
    /// Mean service time, to convert between rps and concurrency.
    #[arg(long, default_value = "100ms")]
    pub(crate) service_time: String,
    /// `herd` (the config's policy), `hpa-default` (Kubernetes HPA defaults) or `both`.
    #[arg(long, default_value = "herd")]
    pub(crate) policy: String,
    /// Where to write the SVG plot (default: <trace>.<policy>.svg).
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ClientArgs {
    /// Admin API base URL (a bare port, or HOST:PORT, means http:// on it) [default: the
    /// [admin] listen of ./herd.toml when there is one, else http://127.0.0.1:9090].
    #[arg(long, env = "HERD_ADMIN_URL", value_parser = admin_url)]
    pub(crate) admin: Option<String>,
    /// Admin token (sent as a Bearer token) [default: the [admin] token of ./herd.toml].
    #[arg(long, env = "HERD_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// The admin API the CLI talks to, and how.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) admin: String,
    pub(crate) token: Option<String>,
}

impl ClientArgs {
    /// `--admin`/`HERD_ADMIN_URL` and `--token`/`HERD_ADMIN_TOKEN` when given; otherwise what
    /// `herd.toml` in this directory says (the herd `herd up` started here), else herd's
    /// default admin address. So `herd status` beside a project's file reaches that
    /// project's herd, not whichever one holds port 9090.
    ///
    /// # Errors
    /// Without `--admin`, a `herd.toml` here that cannot be read as TOML (or names no admin
    /// address): which herd to talk to is unknown, and the default address could be another's.
    pub(crate) fn target(&self) -> Result<Target, String> {
        let path = std::path::Path::new("herd.toml");
        let file = match (&self.admin, herd_config::admin_of(path)) {
            (_, Ok(file)) => file,
            // Named explicitly: the file only lends its token, and only to its own address.
            (Some(_), Err(_)) => None,
            // Not this user's to read (a 0600 file holding the token): herd's default
            // address, as without a file, and a note saying so.
            (None, Err(herd_config::AdminOfError::Unreadable(e))) => {
                eprintln!("herd: note: {e}; using http://127.0.0.1:9090 (pass --admin URL for another herd)");
                None
            }
            (None, Err(e)) => {
                return Err(format!(
                    "{e}\n  hint: the CLI reads [admin] listen and token from ./herd.toml to find its herd; fix the file (`herd check` lists every error) or name the herd with --admin URL"
                ))
            }
        };
        let admin = self.admin.clone().unwrap_or_else(|| {
            file.as_ref()
                .map_or_else(|| "http://127.0.0.1:9090".to_owned(), |f| f.url.clone())
        });
        // The file's token goes only to the file's admin API: never to another herd named
        // with --admin.
        let token = self.token.clone().or_else(|| {
            file.filter(|f| f.url.trim_end_matches('/') == admin.trim_end_matches('/'))
                .and_then(|f| f.token)
        });
        Ok(Target { admin, token })
    }
}

/// The admin API's base URL: as given with a scheme; `9090` is `http://127.0.0.1:9090` (the
/// form `herd up --admin` takes), `host:9090` is `http://host:9090`.
pub(crate) fn admin_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Some((scheme, rest)) = s.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            scheme @ ("http" | "https") if !rest.is_empty() => Ok(format!("{scheme}://{rest}")),
            _ => Err(format!(
                "{s:?} is not the admin API's address: the URL must start with http:// or https://, e.g. http://127.0.0.1:9090"
            )),
        };
    }
    if s.parse::<u16>().is_ok() {
        return Ok(format!("http://127.0.0.1:{s}"));
    }
    if s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    }) {
        return Ok(format!("http://{s}"));
    }
    Err(format!(
        "{s:?} is not the admin API's address: give a URL (http://127.0.0.1:9090), HOST:PORT or a port"
    ))
}

/// What `herd scale` asks for (PM2's `pm2 scale app N|+N|-N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Set(u32),
    Add(u32),
    Remove(u32),
    /// One per core of this machine (as `instances = "max"`).
    Max,
    /// No manual count: the autoscaler's again.
    Auto,
}

pub(crate) fn parse_count(s: &str) -> Result<Count, String> {
    let number = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<u32>().ok())
            .flatten()
    };
    let zero = |n: &str| !n.is_empty() && n.bytes().all(|b| b == b'0');
    if s.strip_prefix(['+', '-']).is_some_and(zero) {
        return Err(format!(
            "{s:?} changes nothing (and would pin today's count against the autoscaler): give N to pin a count, or auto to let the autoscaler decide"
        ));
    }
    let count = match s {
        "max" => Some(Count::Max),
        "auto" => Some(Count::Auto),
        _ => match s.as_bytes().first() {
            Some(b'+') => number(&s[1..]).map(Count::Add),
            Some(b'-') => number(&s[1..]).map(Count::Remove),
            _ => number(s).map(Count::Set),
        },
    };
    count.ok_or_else(|| {
        format!(
            "{s:?} is not a count: give N (that many), +N (add), -N (remove), max (one per core) or auto (the autoscaler decides again)"
        )
    })
}

/// An address to listen on, or a bare port on 127.0.0.1 (as `--port` takes).
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address to listen on: give IP:PORT (e.g. 127.0.0.1:9090) or a port"
        )
    })
}

impl UpArgs {
    /// The config file `herd up` reads (without a command after `--`).
    pub(crate) fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("herd.toml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_bare_ports() {
        assert_eq!(
            parse_listen("9095").unwrap(),
            "127.0.0.1:9095".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(parse_listen("nope").unwrap_err().contains("IP:PORT"));
    }

    #[test]
    fn admin_urls() {
        assert_eq!(admin_url("36090").unwrap(), "http://127.0.0.1:36090");
        assert_eq!(admin_url("10.0.0.5:9090").unwrap(), "http://10.0.0.5:9090");
        assert_eq!(admin_url("https://h:9090/").unwrap(), "https://h:9090/");
        assert!(admin_url("nope").is_err());
        assert_eq!(admin_url("HTTP://h:9090").unwrap(), "http://h:9090");
        for bad in ["ftp://127.0.0.1:9090", "http://", "a/b:9090"] {
            assert!(admin_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scale_counts() {
        assert_eq!(parse_count("3"), Ok(Count::Set(3)));
        assert_eq!(parse_count("+2"), Ok(Count::Add(2)));
        assert_eq!(parse_count("-1"), Ok(Count::Remove(1)));
        assert_eq!(parse_count("max"), Ok(Count::Max));
        assert_eq!(parse_count("auto"), Ok(Count::Auto));
        assert!(parse_count("+0").unwrap_err().contains("changes nothing"));
        assert!(parse_count("-00").unwrap_err().contains("changes nothing"));
        for bad in ["", "+", "++2", "-x", "2.5", "4294967296"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }
}
