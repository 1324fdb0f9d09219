//! Default values, in one place. `docs/config.md` documents the same numbers.
//!
//! The `Default` impls of the model sections use these, so runtime code and tests can build a
//! config section without repeating them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{
    Admin, AlertMetric, AlertRule, Alerts, Balance, Behavior, Gateway, Health, Instances, Logs,
    Metric, MetricTarget, Panic, Scaling, Step, Warmup,
};

pub(crate) const GATEWAY_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub(crate) const POOL_MAX_IDLE: usize = 32;
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const MAX_CONN_PER_IP: u32 = 0;
pub(crate) const RATE_LIMIT_BURST: u32 = 0;
pub(crate) const RATE_LIMIT_STATUS: u16 = 429;
pub(crate) const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `client_body_timeout`.
pub(crate) const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const MAX_HEADER_SIZE: u64 = 64 * 1024;
/// hyper's smallest read buffer: a head limit below it cannot be enforced.
pub(crate) const MIN_HEADER_SIZE: u64 = 8 * 1024;

pub(crate) const ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));

pub(crate) const LOGS_DIR: &str = ".herd/logs";
pub(crate) const STORE_PATH: &str = ".herd/store.redb";
pub(crate) const SERVICES_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9091));
pub(crate) const SERVICES_MAX_BODY: u64 = 1024 * 1024;
pub(crate) const CACHE_MEMORY: u64 = 64 << 20;
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(86_400);
pub(crate) const SESSION_TOUCH_AFTER: Duration = Duration::from_secs(60);
pub(crate) const LOGS_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub(crate) const LOGS_MAX_FILES: u32 = 3;

pub(crate) const INSTANCES: Instances = Instances::Count(1);
pub(crate) const PORT_RANGE: (u16, u16) = (20000, 20999);
pub(crate) const BALANCE: Balance = Balance::RoundRobin;
pub(crate) const HASH_BALANCE_FACTOR: u32 = 125;
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

pub(crate) const SCALING_MIN: u32 = 1;
pub(crate) const SCALING_MAX: u32 = 10;
pub(crate) const SCALING_TARGET: MetricTarget = MetricTarget {
    metric: Metric::Concurrency,
    value: 10.0,
};
pub(crate) const SCALING_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const SCALING_TOLERANCE: f64 = 0.1;
pub(crate) const SCALE_UP_WINDOW: Duration = Duration::ZERO;
pub(crate) const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
pub(crate) const MAX_STEP: Step = Step::Percent(100.0);
pub(crate) const PANIC: Panic = Panic {
    window: Duration::from_secs(6),
    threshold: 2.0,
    stable_window: Duration::from_secs(6),
};
pub(crate) const IDLE_TO_ZERO: Duration = Duration::from_secs(300);
/// How long the gateway holds a request for an app scaled to zero while an instance starts.
pub(crate) const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// How many requests the gateway holds at most for an app scaled to zero.
pub(crate) const HOLD_QUEUE: u32 = 1000;
pub(crate) const RULE_STEP: u32 = 1;
pub(crate) const RULE_COOLDOWN: Duration = Duration::from_secs(300);
pub(crate) const SCHEDULE_TZ: &str = "UTC";

pub(crate) const ALERTS_DEFAULTS: bool = true;
/// `[[alert]] for`: Prometheus fires at once by default, and the seed's monitor checks each
/// sample on its own.
pub(crate) const ALERT_FOR: Duration = Duration::ZERO;
/// `for` of the built-in rules. The seed has no hold time; with one-second samples that would
/// page on every instance start (CPU) or GC pause, so the built-ins wait 30 s.
pub(crate) const BUILTIN_ALERT_FOR: Duration = Duration::from_secs(30);
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const WEBHOOK_RETRIES: u32 = 5;

/// The seed's scaling monitor (`warningCpu: 60, criticalCpu: 80, warningMemory: 70,
/// criticalMemory: 90, maxResponseTime: 3000` with severity warning), as alert rules.
pub(crate) fn builtin_alerts() -> Vec<AlertRule> {
    let rule = |name: &str, metric, warning, critical| AlertRule {
        name: name.to_owned(),
        metric,
        app: None,
        warning,
        critical,
        below: false,
        sustain: BUILTIN_ALERT_FOR,
        webhooks: Vec::new(),
        builtin: true,
    };
    vec![
        rule("cpu_high", AlertMetric::Cpu, Some(60.0), Some(80.0)),
        rule("memory_high", AlertMetric::Memory, Some(70.0), Some(90.0)),
        rule("latency_high", AlertMetric::LatencyP95, Some(3.0), None),
    ]
}

impl Alerts {
    /// The built-in rules `[alerts] defaults = true` turns on, from the seed's scaling monitor:
    /// `cpu_high` (cpu: warning 60 %, critical 80 %), `memory_high` (memory: warning 70 %,
    /// critical 90 % of `max_memory`) and `latency_high` (latency_p95: warning 3 s), each with
    /// `for = "30s"`, on every app.
    #[must_use]
    pub fn builtin_rules() -> Vec<AlertRule> {
        builtin_alerts()
    }
}

/// What a config without `[alerts]` and `[[alert]]` means: the built-in rules, logged only.
impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            defaults: ALERTS_DEFAULTS,
            rules: builtin_alerts(),
            webhooks: Vec::new(),
            webhook_timeout: WEBHOOK_TIMEOUT,
            webhook_retries: WEBHOOK_RETRIES,
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: GATEWAY_LISTEN,
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            pool_idle_timeout: POOL_IDLE_TIMEOUT,
            pool_max_idle: POOL_MAX_IDLE,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            max_conn_per_ip: MAX_CONN_PER_IP,
            client_header_timeout: CLIENT_HEADER_TIMEOUT,
            client_body_timeout: CLIENT_BODY_TIMEOUT,
            max_connections: 0,
            max_header_size: MAX_HEADER_SIZE,
            max_body_size: None,
            security_headers: false,
            merge_slashes: true,
            max_headers: 100,
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
            tunnel_idle_timeout: TUNNEL_IDLE_TIMEOUT,
            tls: None,
            redirect_http: None,
            data_plane: crate::model::DataPlane::default(),
            sticky_secret: None,
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
            date_format: None,
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
            downinter: None,
            expect_status: vec![(200, 399)],
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

/// What an empty `[app.scaling]` table means.
impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min: SCALING_MIN,
            max: SCALING_MAX,
            targets: vec![SCALING_TARGET],
            interval: SCALING_INTERVAL,
            tolerance: SCALING_TOLERANCE,
            scale_up: Behavior {
                window: SCALE_UP_WINDOW,
                max_step: vec![MAX_STEP],
            },
            scale_down: Behavior {
                window: SCALE_DOWN_WINDOW,
                max_step: vec![MAX_STEP],
            },
            warmup: Warmup::Auto,
            panic: Some(PANIC),
            idle_to_zero: IDLE_TO_ZERO,
            hold_timeout: HOLD_TIMEOUT,
            hold_queue: HOLD_QUEUE as usize,
            rules: Vec::new(),
            schedules: Vec::new(),
            predictive: None,
            cost_per_hour: 0.0,
        }
    }
}
