//! Prometheus metrics: requests by route template (never the raw path, so scanners cannot
//! explode the label set), upstream calls, logins and cache use. One explicit registry, shared
//! by the HTTP face, the upstream client and the caches.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::FastMap;

type StaticName = (usize, usize);
type UpstreamKey = (u64, StaticName, StaticName, StaticName);

thread_local! {
    /// Per thread: the series of each (registry, api, method, outcome) of DSM calls seen. The
    /// names are static, so a registry has at most one entry per operation and outcome.
    static UPSTREAM_SERIES: RefCell<FastMap<UpstreamKey, (Counter, Histogram)>> =
        RefCell::new(FastMap::default());
}

/// Bound for registries that come and go (tests build one per app).
const UPSTREAM_SERIES_MAX: usize = 1024;

/// Content type of the exposition format `encode` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of Prometheus's older text format ([`as_prometheus_text`]).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus's own scrapes do). Others get
/// the older text format, as Prometheus's client libraries answer them: its parsers read an
/// OpenMetrics counter family (`# TYPE x counter`, samples `x_total`) as untyped samples.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            range
                .trim_start()
                .starts_with("application/openmetrics-text")
        })
    })
}

/// OpenMetrics text as Prometheus's text format 0.0.4: a counter family's `HELP` and `TYPE`
/// name its samples (`x_total`), and there is no `# EOF`. The samples are the same.
pub fn as_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 8 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kind| Some((kind, line.strip_prefix(kind)?)));
        match comment {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(kind);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                if !tail.is_empty() {
                    text.push(' ');
                    text.push_str(tail);
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    /// One of a fixed set (`telemetry::method_label`), never the caller's raw method.
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    api: &'static str,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOpLabels {
    api: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A configured hook (the names come from the configuration only, never from a request) and
/// how its request was answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    /// Tells registries apart in per-worker caches of [`RouteMetrics`] (never reused).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RouteLabels>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    upstream_calls: Family<UpstreamLabels, Counter>,
    upstream_duration: Histograms<UpstreamOpLabels>,
    logins: Family<OutcomeLabels, Counter>,
    relogins: Counter<u64, AtomicU64>,
    cache: Family<CacheLabels, Counter>,
    delivery_attempts: Family<OutcomeLabels, Counter>,
    hook_requests: Family<HookLabels, Counter>,
    delivery_latency: Histogram,
    delivery_depth: Family<StateLabels, Gauge>,
    delivery_oldest: Family<StateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    subscriptions_disabled: Gauge,
    log_lines_dropped: Counter<u64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("synochat");
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let metrics = Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            upstream_calls: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            logins: Family::default(),
            relogins: Counter::default(),
            cache: Family::default(),
            delivery_attempts: Family::default(),
            hook_requests: Family::default(),
            // 10 ms … ~31 days: a message may wait out a NAS reboot or a day of outage
            // (`delivery.max_age_secs`), an event a receiver's four days
            // (`subscriptions.max_age_secs`), either up to the 30 days the settings allow;
            // beyond the last bucket only +Inf would count it.
            delivery_latency: Histogram::new(exponential_buckets(0.01, 2.0, 29)),
            delivery_depth: Family::default(),
            delivery_oldest: Family::default(),
            subscriptions_disabled: Gauge::default(),
            log_lines_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            metrics.request_duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            metrics.in_flight.clone(),
        );
        registry.register(
            "upstream_calls",
            "Calls to DSM by outcome",
            metrics.upstream_calls.clone(),
        );
        registry.register(
            "upstream_call_duration_seconds",
            "Time DSM took to answer",
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "upstream_logins",
            "DSM logins by outcome",
            metrics.logins.clone(),
        );
        registry.register(
            "upstream_relogins",
            "Logins made because DSM ended the session",
            metrics.relogins.clone(),
        );
        registry.register(
            "cache_requests",
            "List cache lookups by result",
            metrics.cache.clone(),
        );
        // Constant 1: which build runs, for dashboards and alerts across a rollout.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION,
                revision: crate::build_info::REVISION,
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: crate version and git revision",
            build_info,
        );
        registry.register(
            "hook_requests",
            "Requests to configured hooks by answer (accepted, duplicate, not_posted, bad_request, unauthorized, refused, unavailable)",
            metrics.hook_requests.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Asynchronous delivery attempts by outcome (delivered, retry, failed, expired, handed_back)",
            metrics.delivery_attempts.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from accepting an asynchronous message to its delivery",
            metrics.delivery_latency.clone(),
        );
        registry.register(
            "delivery_queue_depth",
            "Deliveries in the store by state",
            metrics.delivery_depth.clone(),
        );
        registry.register(
            "delivery_oldest_age_seconds",
            "Age of the oldest delivery in the store by state",
            metrics.delivery_oldest.clone(),
        );
        registry.register(
            "subscriptions_disabled",
            "Event subscriptions the gateway disabled (after failures or a 410): their events wait",
            metrics.subscriptions_disabled.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log's reader fell behind",
            metrics.log_lines_dropped.clone(),
        );
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        // The writer thread counts what it drops; the counter catches up when scraped.
        self.log_lines_dropped
            .inner()
            .fetch_max(crate::logging::dropped_lines(), Ordering::Relaxed);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// This registry's id, for caches of [`RouteMetrics`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The request metrics of one route template and method, resolved once so that a request
    /// costs atomic updates only, with no label set built and hashed (see [`RouteMetrics`]).
    pub fn route(&self, route: &str, method: &'static str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_owned(),
            method,
            duration: std::cell::OnceCell::new(),
            durations: self.request_duration.clone(),
            requests: self.requests.clone(),
            by_status: std::cell::RefCell::new(Vec::new()),
        }
    }

    pub fn request_finished(
        &self,
        route: &str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.route(route, method).finished(status, elapsed);
    }
}

/// A route's request counters and latency histogram, handles on the registry's own series
/// (cloning a prometheus-client metric shares it). Kept per worker thread.
pub struct RouteMetrics {
    route: String,
    method: &'static str,
    /// Made on the route's first answer that is not a 405.
    duration: std::cell::OnceCell<Histogram>,
    durations: Histograms<RouteLabels>,
    requests: Family<RequestLabels, Counter>,
    // The few statuses a route answers, each resolved on its first use.
    by_status: std::cell::RefCell<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    pub fn finished(&self, status: u16, elapsed: Duration) {
        if status == 405 {
            // A method the route does not serve: under the route's name, every route times
            // ten methods would be series of their own, which callers without a key could
            // make (a 405 comes before the key check).
            let labels = RouteLabels {
                route: "unmatched".to_owned(),
                method: self.method,
            };
            self.durations
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
            self.requests
                .get_or_create(&RequestLabels {
                    route: labels.route,
                    method: self.method,
                    status,
                })
                .inc();
            return;
        }
        self.duration
            .get_or_init(|| {
                self.durations
                    .get_or_create(&RouteLabels {
                        route: self.route.clone(),
                        method: self.method,
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
        let mut by_status = self.by_status.borrow_mut();
        match by_status.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let counter = self
                    .requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        method: self.method,
                        status,
                    })
                    .clone();
                counter.inc();
                by_status.push((status, counter));
            }
        }
    }
}

impl Metrics {
    pub fn upstream_call(
        &self,
        api: &'static str,
        method: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        // The series of a call are found by where its static names are (address and length:
        // the linker may let one name start inside another), not by building and hashing its
        // label set on every call.
        let place = |name: &'static str| (name.as_ptr() as usize, name.len());
        let key = (self.id, place(api), place(method), place(outcome));
        let (calls, duration) = UPSTREAM_SERIES.with_borrow_mut(|series| {
            if series.len() >= UPSTREAM_SERIES_MAX {
                series.clear();
            }
            series
                .entry(key)
                .or_insert_with(|| {
                    let calls = self
                        .upstream_calls
                        .get_or_create(&UpstreamLabels {
                            api,
                            method,
                            outcome,
                        })
                        .clone();
                    let duration = self
                        .upstream_duration
                        .get_or_create(&UpstreamOpLabels { api, method })
                        .clone();
                    (calls, duration)
                })
                .clone()
        });
        calls.inc();
        duration.observe(elapsed.as_secs_f64());
    }

    /// Series the shipped alert rules take `increase()` of, made at 0 so the first event
    /// counts: a series first seen at 1 has no increase for Prometheus.
    pub fn expect_alerted_series<'h>(&self, hooks: impl IntoIterator<Item = &'h str>) {
        for outcome in ["failed", "expired"] {
            let _ = self
                .delivery_attempts
                .get_or_create(&OutcomeLabels { outcome });
        }
        let _ = self
            .logins
            .get_or_create(&OutcomeLabels { outcome: "failed" });
        for hook in hooks {
            let _ = self.hook_requests.get_or_create(&HookLabels {
                hook: hook.to_owned(),
                answer: "unauthorized",
            });
        }
    }

    pub fn login(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn relogin(&self) {
        self.relogins.inc();
    }

    pub fn delivery_attempt(&self, outcome: &'static str) {
        self.delivery_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A request to the configured hook `hook`, answered as `answer`.
    pub fn hook_request(&self, hook: &str, answer: &'static str) {
        self.hook_requests
            .get_or_create(&HookLabels {
                hook: hook.to_owned(),
                answer,
            })
            .inc();
    }

    pub fn delivery_latency(&self, latency: Duration) {
        self.delivery_latency.observe(latency.as_secs_f64());
    }

    /// Sets depth and oldest age for `state` (ages in seconds; 0 when empty).
    pub fn delivery_queue(&self, state: &str, depth: i64, oldest_age_secs: f64) {
        let labels = StateLabels {
            state: state.to_owned(),
        };
        self.delivery_depth.get_or_create(&labels).set(depth);
        self.delivery_oldest
            .get_or_create(&labels)
            .set(oldest_age_secs);
    }

    pub fn subscriptions_disabled(&self, count: i64) {
        self.subscriptions_disabled.set(count);
    }

    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        self.cache_counter(cache, hit).inc();
    }

    /// One cache's hit or miss counter, for a caller that counts often to keep.
    pub fn cache_counter(&self, cache: &'static str, hit: bool) -> Counter {
        let result = if hit { "hit" } else { "miss" };
        self.cache
            .get_or_create(&CacheLabels { cache, result })
            .clone()
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_documented_names_and_labels() {
        let metrics = Metrics::new();
        metrics.request_finished(
            "/api/v1/channels/{channel_id}",
            "GET",
            200,
            Duration::from_millis(3),
        );
        metrics.upstream_call("SYNO.Chat.Post", "list", "ok", Duration::from_millis(2));
        metrics.login(true);
        metrics.relogin();
        metrics.cache_lookup("users", false);
        metrics.delivery_attempt("delivered");
        metrics.delivery_latency(Duration::from_millis(40));
        metrics.delivery_queue("queued", 3, 12.5);
        drop(metrics.request_started());
        let text = metrics.render();
        for expected in [
            r#"synochat_http_requests_total{route="/api/v1/channels/{channel_id}",method="GET",status="200"} 1"#,
            r#"synochat_http_request_duration_seconds_count{route="/api/v1/channels/{channel_id}",method="GET"} 1"#,
            "synochat_http_requests_in_flight 0",
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="ok"} 1"#,
            r#"synochat_upstream_call_duration_seconds_count{api="SYNO.Chat.Post",method="list"} 1"#,
            r#"synochat_upstream_logins_total{outcome="ok"} 1"#,
            "synochat_upstream_relogins_total 1",
            r#"synochat_cache_requests_total{cache="users",result="miss"} 1"#,
            r#"synochat_delivery_attempts_total{outcome="delivered"} 1"#,
            "synochat_delivery_latency_seconds_count 1",
            r#"synochat_delivery_queue_depth{state="queued"} 3"#,
            r#"synochat_delivery_oldest_age_seconds{state="queued"} 12.5"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn a_delivery_days_late_is_in_a_finite_latency_bucket() {
        // The age limits allow 30 days; a delivery seen only in +Inf has no quantile.
        let metrics = Metrics::new();
        metrics.delivery_latency(Duration::from_secs(30 * 86_400));
        let text = metrics.render();
        let widest = text
            .lines()
            .filter_map(|line| line.strip_prefix("synochat_delivery_latency_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                Some((le.parse::<f64>().ok()?, count.to_owned()))
            })
            .filter(|(le, _)| le.is_finite())
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("finite buckets");
        assert!(widest.0 >= 30.0 * 86_400.0, "{widest:?}");
        assert_eq!(widest.1.split_whitespace().next(), Some("1"), "{widest:?}");
    }

    #[test]
    fn dsm_calls_count_by_their_names_in_each_registry() {
        let (one, two) = (Metrics::new(), Metrics::new());
        // A name that starts where another does: same address, different text.
        let method: &'static str = "listing";
        let prefix: &'static str = &method[..4];
        for _ in 0..3 {
            one.upstream_call("SYNO.Chat.Post", method, "ok", Duration::from_millis(1));
        }
        one.upstream_call("SYNO.Chat.Post", prefix, "ok", Duration::from_millis(1));
        one.upstream_call(
            "SYNO.Chat.Post",
            method,
            "timeout",
            Duration::from_millis(1),
        );
        two.upstream_call("SYNO.Chat.Post", method, "ok", Duration::from_millis(1));
        let (one, two) = (one.render(), two.render());
        for expected in [
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="listing",outcome="ok"} 3"#,
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="ok"} 1"#,
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="listing",outcome="timeout"} 1"#,
            r#"synochat_upstream_call_duration_seconds_count{api="SYNO.Chat.Post",method="listing"} 4"#,
        ] {
            assert!(one.contains(expected), "missing {expected} in\n{one}");
        }
        let only = r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="listing",outcome="ok"} 1"#;
        assert!(two.contains(only), "missing {only} in\n{two}");
    }

    #[test]
    fn the_older_text_format_names_counters_by_their_samples() {
        let metrics = Metrics::new();
        metrics.request_finished("/api/v1/channels", "GET", 200, Duration::from_millis(3));
        let openmetrics = metrics.render();
        assert!(openmetrics.contains("# TYPE synochat_http_requests counter\n"));
        let text = as_prometheus_text(&openmetrics);
        assert!(
            text.contains("# TYPE synochat_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP synochat_http_requests_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE synochat_http_request_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"), "{text}");
        // The samples are the same lines.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&text), samples(&openmetrics));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn the_build_is_a_constant_series() {
        let text = Metrics::new().render();
        let expected = format!(
            r#"synochat_build_info{{version="{}",revision="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            crate::build_info::REVISION
        );
        for expected in [expected.as_str(), "# TYPE synochat_build_info gauge"] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
