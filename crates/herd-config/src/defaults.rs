//! Default values, in one place. `docs/config.md` documents the same numbers.
//!
//! The `Default` impls of the model sections use these, so runtime code and tests can build a
//! config section without repeating them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Admin, Balance, Gateway, Health, Instances, Logs};

pub(crate) const GATEWAY_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub(crate) const POOL_MAX_IDLE: usize = 32;
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) const ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));

pub(crate) const LOGS_DIR: &str = ".herd/logs";
pub(crate) const LOGS_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub(crate) const LOGS_MAX_FILES: u32 = 3;

pub(crate) const INSTANCES: Instances = Instances::Count(1);
pub(crate) const PORT_RANGE: (u16, u16) = (20000, 20999);
pub(crate) const BALANCE: Balance = Balance::RoundRobin;
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const MIN_UPTIME: Duration = Duration::from_secs(1);
pub(crate) const MAX_RESTARTS: u32 = 16;
pub(crate) const RESTART_DELAY: Duration = Duration::from_millis(100);
pub(crate) const MAX_RESTART_DELAY: Duration = Duration::from_secs(15);
pub(crate) const MAX_FAILS: u32 = 1;
pub(crate) const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const HEALTH_FASTINTER: Duration = Duration::from_millis(250);
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const HEALTH_RISE: u32 = 2;
pub(crate) const HEALTH_FALL: u32 = 3;

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: GATEWAY_LISTEN,
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            pool_idle_timeout: POOL_IDLE_TIMEOUT,
            pool_max_idle: POOL_MAX_IDLE,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: ADMIN_LISTEN,
            token: None,
        }
    }
}

/// The default `dir` is relative (`.herd/logs`); `load`/`parse`/`quick` resolve it against the
/// base directory.
impl Default for Logs {
    fn default() -> Self {
        Logs {
            dir: PathBuf::from(LOGS_DIR),
            max_size: LOGS_MAX_SIZE,
            max_files: LOGS_MAX_FILES,
        }
    }
}

/// A TCP connect check with the default timings.
impl Default for Health {
    fn default() -> Self {
        Health {
            path: None,
            interval: HEALTH_INTERVAL,
            fastinter: HEALTH_FASTINTER,
            timeout: HEALTH_TIMEOUT,
            rise: HEALTH_RISE,
            fall: HEALTH_FALL,
        }
    }
}

impl Default for Balance {
    fn default() -> Self {
        BALANCE
    }
}

impl Default for Instances {
    fn default() -> Self {
        INSTANCES
    }
}
