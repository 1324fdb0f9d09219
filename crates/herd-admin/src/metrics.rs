//! `GET /metrics`: Prometheus text exposition, encoded by `prometheus-client`. Values are read
//! from the supervisor's snapshot at scrape time (a collector), so scraping costs the data plane
//! nothing.

use std::sync::Arc;

use herd_core::{StatsRegistry, LATENCY_BUCKETS, STATUS_CLASSES};
use herd_fleet::Fleet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct FleetCollector {
    fleet: Arc<Fleet>,
}

/// Request series from the gateway's per-(app, route) counters.
#[derive(Debug)]
struct RequestCollector {
    stats: Arc<StatsRegistry>,
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries: Vec<_> = self
            .stats
            .all()
            .into_iter()
            .map(|e| (e.app.clone(), e.route.clone(), e.counters()))
            .collect();
        let route_l =
            |app: &str, route: &str| vec![("app", app.to_owned()), ("route", route.to_owned())];
        let mut requests = Vec::new();
        let mut bytes_in = Vec::new();
        let mut bytes_out = Vec::new();
        let mut retries = Vec::new();
        let mut connect_errors = Vec::new();
        let mut rate_limited = Vec::new();
        for (app, route, c) in &entries {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let mut l = route_l(app, route);
                l.push(("status_class", (*class).to_owned()));
                requests.push((l, c.by_class[i]));
            }
            bytes_in.push((route_l(app, route), c.bytes_in));
            bytes_out.push((route_l(app, route), c.bytes_out));
            retries.push((route_l(app, route), c.retries));
            connect_errors.push((route_l(app, route), c.connect_errors));
            rate_limited.push((route_l(app, route), c.rate_limited));
        }
        counter(
            &mut encoder,
            "herd_http_requests",
            "Requests answered by the gateway, by app, route and status class.",
            &requests,
        )?;
        if !entries.is_empty() {
            let mut family = encoder.encode_descriptor(
                "herd_http_request_duration_seconds",
                "Time from request arrival to the response head, by app and route.",
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            for (app, route, c) in &entries {
                let labels = route_l(app, route);
                let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .zip(c.buckets.iter())
                    .map(|(ub, n)| (*ub, *n))
                    .collect();
                buckets.push((f64::MAX, c.buckets[LATENCY_BUCKETS.len()]));
                // `_count` from the same loads as the buckets (the response counters are other
                // atomics, read at another moment): `_count` must equal the `+Inf` bucket.
                let count = c.buckets.iter().sum();
                family.encode_family(&labels)?.encode_histogram::<Labels>(
                    c.latency_sum_s,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        counter(
            &mut encoder,
            "herd_http_request_body_bytes",
            "Request body bytes forwarded to instances.",
            &bytes_in,
        )?;
        counter(
            &mut encoder,
            "herd_http_response_body_bytes",
            "Response body bytes sent to clients.",
            &bytes_out,
        )?;
        counter(
            &mut encoder,
            "herd_http_retries",
            "Attempts retried on another instance (or a fresh connection).",
            &retries,
        )?;
        counter(
            &mut encoder,
            "herd_upstream_connect_errors",
            "Failed connects to instances.",
            &connect_errors,
        )?;
        counter(
            &mut encoder,
            "herd_http_rate_limited",
            "Requests rejected by a [[rate_limit]], by app and route.",
            &rate_limited,
        )?;
        let refused: Vec<(Labels, u64)> = self
            .stats
            .refused
            .snapshot()
            .into_iter()
            .map(|(code, n)| (vec![("code", code)], n))
            .collect();
        counter(
            &mut encoder,
            "herd_gateway_refused_requests",
            "Requests the gateway answered itself before any app's route took them (no route 404, a malformed target or framing 400, the per-IP connection limit 503, a body over max_body_size 413), by status code.",
            &refused,
        )?;
        let conns = &self.stats.connections;
        let load = |v: &std::sync::atomic::AtomicU64| {
            i64::try_from(v.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
        };
        let (open, parked) = (load(&conns.open), load(&conns.parked));
        counter(
            &mut encoder,
            "herd_client_connections_accepted",
            "Client connections the gateway accepted.",
            &[(
                Vec::new(),
                conns.accepted.load(std::sync::atomic::Ordering::Relaxed),
            )],
        )?;
        gauge(
            &mut encoder,
            "herd_client_connections",
            "Open client connections: active (served by an HTTP connection state) and parked (keep-alive, released between requests by idle_release; nginx's waiting).",
            None,
            &[
                (vec![("state", "active".to_owned())], (open - parked).max(0)),
                (vec![("state", "parked".to_owned())], parked),
            ],
        )?;
        let by_thread: Vec<(Labels, i64)> = conns
            .by_thread()
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    vec![("thread", i.to_string())],
                    i64::try_from(n).unwrap_or(i64::MAX),
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "herd_gateway_thread_connections",
            "Open client connections per gateway thread ([gateway] threads; the kernel spreads new connections across them by SO_REUSEPORT hash).",
            None,
            &by_thread,
        )?;
        Ok(())
    }
}

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue + Clone>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Labels, T)],
) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(v.clone()).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let apps = self.fleet.status();
        let scaling = self.fleet.scaling_status();
        let app_l = |a: &str| vec![("app", a.to_owned())];
        let inst_l = |a: &str, i: &str| vec![("app", a.to_owned()), ("instance", i.to_owned())];

        let mut desired = Vec::new();
        let mut current = Vec::new();
        let mut ready = Vec::new();
        for a in &apps {
            desired.push((app_l(&a.name), i64::from(a.desired)));
            current.push((app_l(&a.name), a.instances.len() as i64));
            ready.push((app_l(&a.name), a.ready as i64));
        }
        gauge(
            &mut encoder,
            "herd_app_instances_desired",
            "Instances the supervisor converges to.",
            None,
            &desired,
        )?;
        gauge(
            &mut encoder,
            "herd_app_instances_current",
            "Instances that exist, any state.",
            None,
            &current,
        )?;
        gauge(
            &mut encoder,
            "herd_app_instances_ready",
            "Instances in rotation.",
            None,
            &ready,
        )?;

        let mut decisions = Vec::new();
        let mut paused = Vec::new();
        for (app, view) in &scaling {
            if let Some(v) = view {
                paused.push((app_l(app), i64::from(v.paused)));
                for (reason, n) in &v.decisions {
                    decisions.push((
                        vec![("app", app.clone()), ("reason", (*reason).to_owned())],
                        *n,
                    ));
                }
            }
        }
        counter(
            &mut encoder,
            "herd_scaling_decisions",
            "Autoscaler decisions that changed the instance count, by reason.",
            &decisions,
        )?;
        gauge(
            &mut encoder,
            "herd_scaling_paused",
            "1 while the autoscaler of the app is paused.",
            None,
            &paused,
        )?;

        let mut state = Vec::new();
        let mut restarts = Vec::new();
        let mut rss = Vec::new();
        let mut cpu = Vec::new();
        let mut in_flight = Vec::new();
        let mut requests = Vec::new();
        for a in &apps {
            // During a replacement (rolling reload, max_memory, a slot reused while its old
            // instance drains) two processes share an id: the first listed is the slot's
            // current one; one series per label set, as Prometheus requires.
            let mut ids = std::collections::HashSet::new();
            for i in a.instances.iter().filter(|i| ids.insert(i.id.as_str())) {
                // Every state, 1 for the one it is in (as kube-state-metrics does), so a state
                // left shows as 0 instead of a series that stops.
                for s in herd_core::InstanceState::ALL {
                    let mut l = inst_l(&a.name, &i.id);
                    l.push(("state", s.as_str().to_owned()));
                    state.push((l, i64::from(s == i.state)));
                }
                restarts.push((inst_l(&a.name, &i.id), u64::from(i.restarts)));
                rss.push((
                    inst_l(&a.name, &i.id),
                    i64::try_from(i.rss_bytes).unwrap_or(i64::MAX),
                ));
                cpu.push((inst_l(&a.name, &i.id), i.cpu_percent / 100.0));
                in_flight.push((inst_l(&a.name, &i.id), i.in_flight as i64));
                requests.push((inst_l(&a.name, &i.id), i.requests_total));
            }
        }
        gauge(
            &mut encoder,
            "herd_instance_state",
            "Per instance and state: 1 for the state it is in, 0 for the others.",
            None,
            &state,
        )?;
        counter(
            &mut encoder,
            "herd_instance_restarts",
            "Restarts after unexpected exits (and memory replacements).",
            &restarts,
        )?;
        gauge(
            &mut encoder,
            "herd_instance_resident_memory",
            "RSS of the instance's process group.",
            Some(&Unit::Bytes),
            &rss,
        )?;
        gauge(
            &mut encoder,
            "herd_instance_cpu_usage_cores",
            "CPU used by the instance's process group over the last sample, in cores (1 = one core busy; above 1 on several cores).",
            None,
            &cpu,
        )?;
        gauge(
            &mut encoder,
            "herd_instance_in_flight_requests",
            "Requests the gateway has in flight to the instance.",
            None,
            &in_flight,
        )?;
        counter(
            &mut encoder,
            "herd_instance_requests",
            "Requests the gateway sent to the instance.",
            &requests,
        )?;
        Ok(())
    }
}

/// The shared store's state and the cache's counters.
struct ServicesCollector {
    services: Arc<herd_services::Services>,
}

impl std::fmt::Debug for ServicesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServicesCollector")
    }
}

impl Collector for ServicesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use herd_store::Backend as _;
        let status = self.services.store().status();
        gauge(
            &mut encoder,
            "herd_store_up",
            "1 when the shared store answers, 0 while it is down or reconnecting.",
            None,
            &[(
                vec![("backend", status.backend.to_owned())],
                i64::from(status.state == "ok"),
            )],
        )?;
        let c = self.services.cache.stats();
        let l = |level: &str, result: &str| {
            vec![("level", level.to_owned()), ("result", result.to_owned())]
        };
        counter(
            &mut encoder,
            "herd_cache_lookups",
            "Cache reads by level (l1: this node's memory, l2: the store) and result.",
            &[
                (l("l1", "hit"), c.l1_hits),
                (l("l1", "miss"), c.l1_misses),
                (l("l2", "hit"), c.l2_hits),
                (l("l2", "miss"), c.l2_misses),
            ],
        )?;
        counter(
            &mut encoder,
            "herd_cache_loads",
            "Get-or-load loader calls (misses and background refreshes).",
            &[(vec![], c.loads)],
        )?;
        counter(
            &mut encoder,
            "herd_cache_refreshes",
            "Background refreshes (refresh-ahead, stale-while-revalidate).",
            &[(vec![], c.refreshes)],
        )?;
        counter(
            &mut encoder,
            "herd_cache_invalidations",
            "Invalidations (delete, prefix, tag), local or from another node.",
            &[(vec![], c.invalidations)],
        )?;
        Ok(())
    }
}

/// The registry behind `GET /metrics`.
/// Saturation of the gateway's balancing, per app: what `GET /loadbalancer/status` shows as
/// JSON (HAProxy's `haproxy_backend_current_queue` and active servers).
struct LbCollector {
    fleet: Arc<Fleet>,
    lb: Arc<dyn herd_core::LbView>,
}

impl std::fmt::Debug for LbCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbCollector").finish_non_exhaustive()
    }
}

impl Collector for LbCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let apps = self.fleet.app_names();
        let app_l = |app: &str| vec![("app", app.to_owned())];
        let queued: Vec<(Labels, i64)> = apps
            .iter()
            .map(|a| {
                (
                    app_l(a),
                    i64::try_from(self.lb.queued(a)).unwrap_or(i64::MAX),
                )
            })
            .collect();
        // What the gateway can pick now (`AppStatus::serving`: ready, not drained, not
        // passively down unless all are, no open circuit).
        let rotation: Vec<(Labels, i64)> = self
            .fleet
            .status()
            .iter()
            .map(|a| (app_l(&a.name), i64::try_from(a.serving).unwrap_or(i64::MAX)))
            .collect();
        gauge(
            &mut encoder,
            "herd_app_queued_requests",
            "Requests waiting for an instance under its max_conn (the app's queue; 503 when it is full or queue_timeout passes).",
            None,
            &queued,
        )?;
        gauge(
            &mut encoder,
            "herd_app_instances_in_rotation",
            "Instances the gateway sends requests to now: ready, not drained, not passively down (unless every one is) and without an open circuit.",
            None,
            &rotation,
        )
    }
}

pub(crate) fn registry(
    fleet: Arc<Fleet>,
    stats: Arc<StatsRegistry>,
    services: Option<Arc<herd_services::Services>>,
    lb: Option<Arc<dyn herd_core::LbView>>,
) -> Registry {
    let mut registry = Registry::default();
    if let Some(lb) = lb {
        registry.register_collector(Box::new(LbCollector {
            fleet: Arc::clone(&fleet),
            lb,
        }));
    }
    registry.register_collector(Box::new(FleetCollector { fleet }));
    registry.register_collector(Box::new(RequestCollector { stats }));
    if let Some(services) = services {
        registry.register_collector(Box::new(ServicesCollector { services }));
    }
    registry
}
