//! The composition root: builds the upstream client, caches, keys and routes, binds the
//! listener (port 0 allowed) and runs until stopped, then logs out of DSM.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, web};
use secrecy::SecretString;
use utoipa_actix_web::AppExt;

use std::collections::BTreeMap;

use crate::api::cache::Caches;
use crate::api::health::MetricsAccess;
use crate::api::{self, AppState, IntegrationToken, RouteTable};
use crate::auth::ApiKeys;
use crate::config::Settings;
use crate::config::TokenKind;
use crate::delivery::Outbox;
use crate::events::Events;
use crate::forwarded::TrustedProxies;
use crate::front_door::front_door;
use crate::metrics::Metrics;
use crate::sim::{self, SimConfig, Simulator};
use crate::store::{SoleUse, Store};
use crate::telemetry;
use crate::upstream::{DsmShared, TlsTrust, UpstreamConfig};

pub struct Application {
    server: Server,
    address: SocketAddr,
    upstream: Arc<DsmShared>,
    simulator: Option<Simulator>,
    metrics_server: Option<(Server, SocketAddr)>,
    store: Store,
    /// Released once the gateway has stopped (after the outbox handed its claims back).
    sole_use: SoleUse,
    outbox: Arc<Outbox>,
    events: Arc<Events>,
    shutdown_grace: Duration,
    request_tasks: web::Data<crate::front_door::RequestTasks>,
    /// Told by [`AppHandle::stop`] when the drain's time is up with connections still open.
    drain_time_up: Arc<tokio::sync::Notify>,
}

/// Stops the gateway (the CLI on SIGTERM/SIGINT, tests, embedding).
#[derive(Clone)]
pub struct AppHandle {
    server: actix_web::dev::ServerHandle,
    events: Arc<Events>,
    outbox: Arc<Outbox>,
    request_tasks: web::Data<crate::front_door::RequestTasks>,
    shutdown_grace: Duration,
    drain_time_up: Arc<tokio::sync::Notify>,
}

impl AppHandle {
    /// Stops the server; `graceful` drains in-flight requests for up to
    /// `server.shutdown_timeout_secs`. Event streams never end on their own, so they are ended
    /// first (clients reconnect with `Last-Event-ID`), or one open stream would hold the drain
    /// for the whole timeout. The outbox stops claiming new work at once, during the drain.
    pub async fn stop(&self, graceful: bool) {
        self.outbox.begin_stopping();
        self.events.stop_streams();
        // Writes are waited for first, no new connection taken meanwhile: a write's caller
        // that leaves takes along the connection the server's own drain would wait for, and a
        // write still running when that drain ends is dropped with its worker.
        if graceful {
            self.server.pause().await;
        }
        let within = if graceful {
            self.shutdown_grace
        } else {
            Duration::ZERO
        };
        let deadline = tokio::time::Instant::now() + within;
        // The server's drain gets what is left of the time, the reads having run meanwhile:
        // the whole stop stays within `server.shutdown_timeout_secs` (and a service manager's
        // patience), then what is still open is cut.
        let writes_ended = self.request_tasks.stop(within).await;
        if !(graceful && writes_ended) {
            self.server.stop(false).await;
        } else if tokio::time::timeout_at(deadline, self.server.stop(true))
            .await
            .is_err()
        {
            self.drain_time_up.notify_one();
        }
    }
}

/// A listener on `address`, or the error naming the address and the setting (`Address
/// already in use` alone does not say which).
fn listen(address: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {address} ({key}): {error}"),
        )
    })
}

/// `/metrics` alone on its own listener (e.g. an address only Prometheus reaches).
fn metrics_server(
    bind: SocketAddr,
    demo: bool,
    metrics: web::Data<Metrics>,
    access: web::Data<MetricsAccess>,
    keys: web::Data<ApiKeys>,
) -> std::io::Result<(Server, SocketAddr)> {
    let listener = listen(bind, "metrics.bind")?;
    let address = listener.local_addr()?;
    // Other paths and methods get the API's problem answers (404, 405 with `Allow`).
    let routes = web::Data::new(RouteTable::of(&[("/metrics", &["GET"])]));
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .wrap(from_fn(front_door))
            .wrap(Condition::new(
                demo,
                from_fn(api::mode::mark_demo_responses),
            ))
            .app_data(metrics.clone())
            .app_data(access.clone())
            .app_data(keys.clone())
            .app_data(routes.clone())
            .route("/metrics", web::get().to(api::health::metrics))
            .default_service(web::to(api::fallback))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?;
    tracing::info!(%address, "metrics listening");
    Ok((server.run(), address))
}

/// CORS for `server.cors_origins`: those origins may call with a key (and resume an event
/// stream with `Last-Event-ID`) and read the answer's request id, `Retry-After`, rate-limit
/// headers and file name. Other origins get no CORS
/// headers (the browser then withholds the answer); the gateway itself decides the rest.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            telemetry::REQUEST_ID_HEADER,
            header::HeaderName::from_static("x-chat-token"),
            // A fetch-based SSE client resuming `GET /api/v1/events` sends it itself.
            header::HeaderName::from_static("last-event-id"),
            // Asynchronous sends, idempotent retries and conditional reads of cached lists.
            header::HeaderName::from_static("prefer"),
            header::HeaderName::from_static("idempotency-key"),
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            telemetry::REQUEST_ID_HEADER,
            header::RETRY_AFTER,
            header::CONTENT_DISPOSITION,
            header::LOCATION,
            header::ETAG,
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
            header::HeaderName::from_static("preference-applied"),
            header::HeaderName::from_static("idempotent-replayed"),
            header::HeaderName::from_static("x-chat-post-count"),
        ])
        .max_age(600)
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = cors.allowed_origin(origin.trim_end_matches('/'));
    }
    cors
}

/// Turns the validated settings into the upstream client's configuration.
pub fn upstream_config(
    settings: &Settings,
    demo_url: Option<String>,
) -> Result<UpstreamConfig, String> {
    let up = &settings.upstream;
    let (base_url, account, password) = match (&up.url, demo_url) {
        (Some(url), _) => (
            url.clone(),
            up.username.clone().unwrap_or_default(),
            up.password
                .clone()
                .unwrap_or_else(|| SecretString::from(String::new())),
        ),
        (None, Some(url)) => (
            url::Url::parse(&url).map_err(|e| e.to_string())?,
            sim::DEMO_ACCOUNT.to_owned(),
            SecretString::from(sim::DEMO_PASSWORD.to_owned()),
        ),
        (None, None) => return Err("no upstream configured".to_owned()),
    };
    let trust = match (&up.tls.ca_file, up.tls.insecure_skip_verify) {
        (Some(path), _) => TlsTrust::CaFile(path.clone()),
        (None, true) => TlsTrust::InsecureSkipVerify,
        (None, false) => TlsTrust::PublicRoots,
    };
    Ok(UpstreamConfig {
        base_url,
        account,
        password,
        device_id: up.device_id.clone(),
        device_name: up.device_name.clone(),
        session_name: up.session_name.clone(),
        timeout: Duration::from_millis(up.timeout_ms),
        login_backoff_max: Duration::from_secs(up.login_backoff_max_secs),
        max_concurrency: up.max_concurrency as usize,
        slot_wait: Duration::from_millis(up.slot_wait_ms),
        post_list_paging: up.post_list_paging,
        trust,
    })
}

/// The configured integration tokens; in demo mode also the simulator's demo webhook and bot.
fn integration_tokens(
    settings: &Settings,
    simulator: Option<&Simulator>,
) -> BTreeMap<String, IntegrationToken> {
    let mut tokens: BTreeMap<String, IntegrationToken> = settings
        .tokens
        .iter()
        .filter_map(|(name, t)| {
            Some((
                name.clone(),
                IntegrationToken {
                    token: t.token.clone()?,
                    kind: t.kind,
                },
            ))
        })
        .collect();
    if let Some(sim) = simulator {
        let control = sim.control();
        for (name, token, kind) in [
            (
                crate::config::DEMO_WEBHOOK_TOKEN,
                control.demo_webhook_token(),
                TokenKind::Webhook,
            ),
            (
                crate::config::DEMO_BOT_TOKEN,
                control.demo_bot_token(),
                TokenKind::Bot,
            ),
        ] {
            tokens.entry(name.to_owned()).or_insert(IntegrationToken {
                token: SecretString::from(token),
                kind,
            });
        }
    }
    tokens
}

/// Every few minutes: deletes expired Idempotency-Key records (expired keys met by a request
/// are also deleted then) and deliveries finished more than `delivery.retention_secs` ago.
/// Runs until the runtime stops; with several replicas each one does it (the deletes are
/// idempotent).
/// The time (ms) before which finished deliveries are past `retention`. A retention past i64
/// milliseconds (a "forever" in the settings) keeps everything, where an `as` cast wrapped it
/// negative and purged every finished delivery.
fn retained_since(now: i64, retention: Duration) -> i64 {
    now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

fn spawn_housekeeping(store: Store, delivery_retention: Duration) {
    crate::store::task::spawn(async move {
        // The first pass soon after start, not at it (start-up does not wait on it), and not
        // a period after it: a gateway restarted more often than every period never ran one,
        // and a replaced subscription secret stayed in the store past its grace.
        let period = Duration::from_secs(300);
        let first = Duration::from_secs(10);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        loop {
            tick.tick().await;
            let now = crate::delivery::now_ms();
            match store.idempotency_purge(now).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired Idempotency-Key records deleted"),
                Err(error) => tracing::warn!(%error, "expired Idempotency-Key records not deleted"),
            }
            let before = retained_since(now, delivery_retention);
            match store.purge_deliveries(before).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "finished deliveries past retention removed"),
                Err(error) => tracing::warn!(%error, "finished deliveries not removed"),
            }
            match store.forget_replaced_secrets(now).await {
                Ok(0) => {}
                Ok(forgotten) => {
                    tracing::debug!(forgotten, "replaced subscription secrets dropped")
                }
                Err(error) => tracing::warn!(%error, "replaced subscription secrets not dropped"),
            }
            match store.prune_targets(now).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "targets no delivery names removed"),
                Err(error) => tracing::warn!(%error, "unused targets not removed"),
            }
        }
    });
}

/// A clock this far from the database server's is warned about at start.
const CLOCK_SKEW_WARNING_MS: i64 = 1_000;

/// What every handler shares: caches, the DSM client, tokens, limits and the hooks.
fn app_state(
    settings: &Settings,
    upstream: Arc<DsmShared>,
    tokens: BTreeMap<String, IntegrationToken>,
    metrics: &Arc<Metrics>,
) -> web::Data<AppState> {
    web::Data::new(AppState {
        caches: Caches::new(Duration::from_secs(settings.cache.ttl_secs), metrics),
        upstream,
        tokens,
        max_upload_bytes: settings.server.max_upload_bytes,
        uploads: Arc::new(tokio::sync::Semaphore::new(
            settings.server.max_concurrent_uploads,
        )),
        file_urls: crate::domain::FileUrlPolicy::new(&settings.server.file_url_allow),
        message_parts: crate::chunking::PartLimits {
            max_chars: settings.delivery.max_message_chars,
            max_parts: settings.delivery.max_message_parts,
        },
        hooks: settings
            .hooks
            .iter()
            .filter_map(|(name, hook)| Some((name.clone(), api::hooks::Hook::from_settings(hook)?)))
            .collect(),
        hook_bodies: Arc::new(api::hooks::HookBodies::new()),
        inbound_bodies: Arc::new(api::hooks::HookBodies::for_inbound()),
        hook_replays: api::hooks::replays(),
    })
}

/// The OpenAPI document as this gateway serves it (its public URL, its configured tokens'
/// names), and the table of its routes that answers 405s.
fn served_document(
    settings: &Settings,
    state: &AppState,
) -> std::io::Result<(web::Data<RouteTable>, web::Data<api::docs::OpenApiJson>)> {
    let mut document = api::openapi_document();
    if let Some(public_url) = &settings.server.public_url {
        document.servers = Some(vec![utoipa::openapi::Server::new(
            public_url.as_str().trim_end_matches('/'),
        )]);
    }
    api::describe_configured_tokens(&mut document, &state.tokens);
    // Served beside the documented routes, so that another method is a 405 there too.
    let mut routes = RouteTable::from_openapi(&document).with(&[
        ("/openapi.json", &["GET"]),
        ("/docs", &["GET"]),
        ("/docs/", &["GET"]),
        ("/docs/{file}", &["GET"]),
    ]);
    if metrics_on_api(settings) {
        routes = routes.with(&[("/metrics", &["GET"])]);
    }
    let routes = web::Data::new(routes);
    let document = web::Data::new(api::docs::OpenApiJson::new(&document)?);
    Ok((routes, document))
}

/// Hooks that share a secret are told apart only by the name in `/hooks/{name}/…`: the doors
/// that name no hook (ntfy's JSON publishing, Synology's URL, Telegram's, Matrix's) refuse the
/// secret, which a sender set up there meets only at its first alert.
fn warn_of_shared_hook_secrets(hooks: &BTreeMap<String, crate::config::HookSettings>) {
    let mut by_secret: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, hook) in hooks {
        if let Some(hash) = &hook.secret_hash {
            let hash = secrecy::ExposeSecret::expose_secret(hash).to_ascii_lowercase();
            by_secret.entry(hash).or_default().push(name);
        }
    }
    for names in by_secret.values().filter(|names| names.len() > 1) {
        tracing::warn!(
            hooks = %names.join(", "),
            "these hooks share one secret: the doors that name no hook (ntfy's, Synology's URL, \
             Telegram's, Matrix's) refuse it; give each hook its own secret"
        );
    }
}

/// Whether `/metrics` is served on the API's listener (not on a `metrics.bind` of its own).
fn metrics_on_api(settings: &Settings) -> bool {
    settings.metrics.enabled && settings.metrics.bind.is_none()
}

/// Warnings for an upstream that can be read on its way: unverified TLS, plain http.
fn warn_of_an_unsafe_upstream(settings: &Settings, config: &UpstreamConfig) {
    if settings.upstream.tls.insecure_skip_verify {
        tracing::warn!(
            "upstream.tls.insecure_skip_verify is ON: the NAS's certificate is NOT verified; anyone on the path can read the DSM password"
        );
    }
    if config.base_url.scheme() == "http"
        && !config.base_url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    {
        tracing::warn!(
            "upstream.url uses plain http: the DSM password and session travel unencrypted"
        );
    }
}

impl Application {
    /// Builds everything and binds the listener. In demo mode the DSM simulator is started on a
    /// loopback port first and the gateway is pointed at it.
    pub async fn build(settings: Settings) -> std::io::Result<Self> {
        // First: a gateway that cannot keep messages must not start taking them.
        let (store, sole_use) = Store::connect_to_serve(&settings.store)
            .await
            .map_err(std::io::Error::other)?;
        tracing::info!(
            backend = ?store.backend(),
            url = %crate::store::redacted_url(secrecy::ExposeSecret::expose_secret(&settings.store.url)),
            "store ready"
        );
        // Replicas take over each other's leases and settle times by their own clocks.
        if let Ok(Some(ahead)) = store.clock_ahead_ms().await
            && ahead.abs() > CLOCK_SKEW_WARNING_MS
        {
            tracing::warn!(
                ahead_ms = ahead,
                "this host's clock differs from the PostgreSQL server's by more than a second: \
                 replicas whose clocks disagree can take over a send still in flight and post \
                 it twice; keep every replica's clock synchronised (NTP)"
            );
        }
        let simulator = if settings.is_demo() {
            let sim = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
                .await?;
            // Warn on every start: demo data must never pass for a NAS (README, "Unsafe settings").
            tracing::warn!(simulator = %sim.base_url(), "DEMO MODE: no NAS configured, serving the built-in DSM simulator; writes go nowhere");
            Some(sim)
        } else {
            None
        };
        let config = upstream_config(&settings, simulator.as_ref().map(Simulator::base_url))
            .map_err(std::io::Error::other)?;
        warn_of_an_unsafe_upstream(&settings, &config);
        warn_of_shared_hook_secrets(&settings.hooks);
        let metrics = Metrics::new();
        metrics.expect_alerted_series(settings.hooks.keys().map(String::as_str));
        let upstream = DsmShared::new(config, metrics.clone()).map_err(std::io::Error::other)?;
        let keys = web::Data::new(ApiKeys::from_settings(&settings.auth, settings.is_demo()));
        if keys.is_open() {
            tracing::warn!(
                "API keys are not required (demo mode without keys, or auth.disabled = true)"
            );
        }
        let tokens = integration_tokens(&settings, simulator.as_ref());
        let outbox = Outbox::new(
            store.clone(),
            settings.delivery.clone(),
            &settings.subscriptions,
            metrics.clone(),
            Duration::from_millis(settings.upstream.timeout_ms),
        );
        // A store that cannot be read now is read by the worker's claims instead.
        if let Err(error) = outbox.load_queued_targets().await {
            tracing::warn!(%error, "cannot list the outbox's queued targets at start");
        }
        let callbacks =
            crate::events::subscriptions::client(settings.subscriptions.ca_file.as_deref())
                .map_err(|e| std::io::Error::other(format!("subscriptions.ca_file: {e}")))?;
        outbox.spawn_worker(
            upstream.clone(),
            tokens
                .iter()
                .map(|(name, t)| (name.clone(), t.token.clone()))
                .collect(),
            settings.subscriptions.clone(),
            callbacks,
        );
        let state = app_state(&settings, upstream.clone(), tokens, &metrics);
        let hook_state = state.clone();
        let (routes, document) = served_document(&settings, &state)?;
        let proxies = web::Data::new(TrustedProxies::new(settings.server.trusted_proxies.clone()));
        let body_deadlines = web::Data::new(crate::body_deadline::BodyDeadlines {
            timeout: Duration::from_millis(settings.server.body_timeout_ms),
            upload_timeout: Duration::from_millis(settings.server.upload_timeout_ms),
        });
        let public_base = settings
            .server
            .public_url
            .as_ref()
            .map(|url| web::Data::new(crate::forwarded::ConfiguredBase::new(url)));

        let metrics_data = web::Data::from(metrics.clone());
        let metrics_access = web::Data::new(MetricsAccess {
            require_key: settings.metrics.require_key,
        });
        let metrics_on_api = metrics_on_api(&settings);
        let metrics_server = match (settings.metrics.enabled, settings.metrics.bind) {
            (true, Some(bind)) => Some(metrics_server(
                bind,
                settings.is_demo(),
                metrics_data.clone(),
                metrics_access.clone(),
                keys.clone(),
            )?),
            _ => None,
        };

        let demo = settings.is_demo();
        let mode = web::Data::new(if demo {
            api::mode::GatewayMode::Demo
        } else {
            api::mode::GatewayMode::Nas
        });
        let limits =
            crate::ratelimit::CallerLimits::from_settings(&settings.rate_limit).map(web::Data::new);
        let browser_guard = web::Data::new(crate::browser::BrowserGuard {
            open: keys.is_open(),
            public_url: settings.server.public_url.clone(),
            cors_origins: settings.server.cors_origins.clone(),
        });
        let cors_origins = settings.server.cors_origins.clone();
        let persist_authorization = settings.server.docs_persist_authorization;

        let listener = listen(settings.server.bind, "server.bind")?;
        let address = listener.local_addr()?;
        let server_upstream = upstream.clone();
        let store_data = web::Data::new(store.clone());
        let store_watch = api::health::StoreWatch::spawn(store.clone());
        let open_streams = web::Data::new(api::OpenStreams::default());
        let request_tasks = web::Data::new(crate::front_door::RequestTasks::default());
        let tasks_data = request_tasks.clone();
        let outbox_data = web::Data::from(outbox.clone());
        let idempotency = web::Data::new(api::idempotency::Idempotency {
            ttl: Duration::from_secs(settings.idempotency.ttl_secs),
            lease: Duration::from_secs(settings.idempotency.lease_secs),
            max_body_bytes: settings
                .server
                .max_upload_bytes
                .saturating_add(api::idempotency::FORM_OVERHEAD_BYTES),
        });
        spawn_housekeeping(
            store.clone(),
            Duration::from_secs(settings.delivery.retention_secs),
        );
        let events = Events::new(store.clone(), &settings)
            .await
            .map_err(std::io::Error::other)?;
        events.start().await.map_err(std::io::Error::other)?;
        crate::events::subscriptions::spawn_fan_out(events.clone(), outbox.clone());
        let events_data = web::Data::from(events.clone());
        let later_heads = crate::later_heads::LaterHeads::start(Duration::from_secs(
            settings.server.keep_alive_secs,
        ));
        let mut server = actix_web::HttpServer::new(move || {
            let chat = web::Data::new(server_upstream.client());
            let (app, _) = App::new()
                .into_utoipa_app()
                .map(|app| {
                    // Outermost last: the front door (request context, browser guard), CORS,
                    // the rate limit. A layer that is off is not in the way at all.
                    app.wrap(Condition::new(
                        limits.is_some(),
                        crate::api::divert::Divert::new(
                            crate::ratelimit::refuses,
                            from_fn(crate::ratelimit::refuse),
                        ),
                    ))
                    .wrap(Condition::new(
                        !cors_origins.is_empty(),
                        cors(&cors_origins),
                    ))
                    .wrap(from_fn(front_door))
                    .wrap(Condition::new(
                        demo,
                        from_fn(api::mode::mark_demo_responses),
                    ))
                    .app_data(mode.clone())
                    .app_data(browser_guard.clone())
                    .configure(|cfg| {
                        if let Some(limits) = &limits {
                            cfg.app_data(limits.clone());
                        }
                    })
                    .app_data(state.clone())
                    .app_data(keys.clone())
                    .app_data(chat)
                    .app_data(routes.clone())
                    .app_data(document.clone())
                    .app_data(metrics_data.clone())
                    .app_data(metrics_access.clone())
                    .app_data(proxies.clone())
                    .app_data(body_deadlines.clone())
                    .configure(|cfg| {
                        if let Some(base) = &public_base {
                            cfg.app_data(base.clone());
                        }
                    })
                    .app_data(store_data.clone())
                    .app_data(store_watch.clone())
                    .app_data(open_streams.clone())
                    .app_data(tasks_data.clone())
                    .app_data(outbox_data.clone())
                    .app_data(idempotency.clone())
                    .app_data(events_data.clone())
                    .configure(api::extractor_configs)
                })
                .configure(api::routes)
                // After the API's routes: actix tries the patterns in order (`api::routes`).
                .map(|app| {
                    app.configure(|cfg| api::docs_routes(cfg, persist_authorization))
                        .configure(|cfg| {
                            if metrics_on_api {
                                cfg.route("/metrics", web::get().to(api::health::metrics));
                            }
                        })
                })
                .split_for_parts();
            app.default_service(web::to(api::fallback))
        })
        .on_connect(move |connection, data| later_heads.on_connect(connection, data))
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        // A caller that closes its connection has given up on the answer: its request is
        // dropped at once, and with it its DSM call, upstream slot and memory. Allowed
        // half-closed, a client that timed out and retried left every attempt running against
        // a hanging NAS, holding the slots its retries then waited for.
        .h1_allow_half_closed(false)
        .keep_alive(match settings.server.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .max_connections(connections_per_worker(
            settings.server.max_connections,
            settings.server.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            raise_open_files_limit(),
        ))
        // The owner decides when to stop (the CLI on SIGTERM/SIGINT, tests through `handle`):
        // actix's own signal handling also tore down the in-process simulator before logout.
        .disable_signals()
        .listen(listener)?;
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers);
        }
        let server = server.run();

        // Log in ahead of the first request; failures are reported by /readyz and retried on demand.
        // Then check that the hooks' named targets exist.
        let warm_up = upstream.clone();
        let hook_state = hook_state;
        actix_web::rt::spawn(async move {
            let chat = web::Data::new(warm_up.client());
            if let Err(error) = chat.probe().await {
                tracing::warn!(%error, "DSM not ready at start-up");
            }
            api::hooks::check_targets(&hook_state, &chat).await;
            // By now the workers have built their apps: give back what start-up freed.
            actix_web::rt::time::sleep(Duration::from_secs(1)).await;
            release_freed_heap();
            release_start_up_code();
        });
        tracing::info!(%address, docs = %format!("http://{address}/docs"), "syno-chat-gateway listening");
        Ok(Self {
            server,
            address,
            upstream,
            simulator,
            metrics_server,
            store,
            sole_use,
            outbox,
            events,
            shutdown_grace: Duration::from_secs(settings.server.shutdown_timeout_secs),
            drain_time_up: Arc::default(),
            request_tasks,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The separate metrics listener's address, when `metrics.bind` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(_, address)| *address)
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// A handle that stops the server gracefully (tests, embedding).
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            events: self.events.clone(),
            outbox: self.outbox.clone(),
            request_tasks: self.request_tasks.clone(),
            shutdown_grace: self.shutdown_grace,
            drain_time_up: self.drain_time_up.clone(),
        }
    }

    /// Serves until stopped (SIGTERM drains in-flight requests), then ends the DSM session.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics_handle = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let server = self.server;
        let result = tokio::select! {
            result = server => result,
            () = self.drain_time_up.notified() => {
                // The workers' connections are cut as the process ends.
                tracing::warn!("connections still open when the drain's time was up are cut");
                Ok(())
            }
        };
        // No new work (since the stop began, where it came through the handle); the message
        // being sent finishes its chunk, the rest is handed back, within the drain's timeout
        // counted from the stop.
        self.outbox.shut_down(self.shutdown_grace).await;
        if let Some(handle) = metrics_handle {
            handle.stop(true).await;
        }
        match self.upstream.client().logout().await {
            Ok(()) => tracing::info!("logged out of DSM"),
            Err(error) => tracing::warn!(%error, "DSM logout failed"),
        }
        if let Some(simulator) = self.simulator {
            simulator.stop().await;
        }
        self.store.close().await;
        drop(self.sole_use);
        result
    }
}

/// With one worker, limits glibc to one malloc arena: glibc gives each thread that allocates its
/// own arena, and the SQLite and acceptor threads, which allocate little, kept about 0.8 MB of
/// mostly empty arenas (`make bench`, idle RSS). With one worker there is no allocation on
/// several threads at once to spread; with more, glibc's default stays. `MALLOC_ARENA_MAX`, when
/// set, decides instead. Must run before other threads start.
pub fn limit_malloc_arenas(workers: Option<usize>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let workers = workers.unwrap_or_else(|| {
            // actix-web's default worker count.
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if workers != 1 || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: mallopt only changes allocator parameters; M_ARENA_MAX takes effect for
        // arenas created later, and any value is valid.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = workers;
}

/// Descriptors kept free of client connections: the NAS's and the store's connections, the
/// log, the SQLite files, the metrics listener.
const RESERVED_FILES: u64 = 256;

/// Client connections per worker: `server.max_connections` shared out, or by default what the
/// open-files limit leaves after [`RESERVED_FILES`] (at least 64 a worker, at most actix's
/// own default of 25,000). Past the cap connections wait in the kernel's queue; without it a
/// crowd of idle connections took every descriptor, and with them the NAS's and the store's.
fn connections_per_worker(configured: Option<usize>, workers: usize, open_files: u64) -> usize {
    let workers = workers.max(1);
    // Two descriptors a connection: its own and the one its clock shuts it down with
    // (`later_heads`).
    let total = configured.unwrap_or_else(|| {
        usize::try_from(open_files.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX)
    });
    let per_worker = total.div_ceil(workers);
    match configured {
        Some(_) => per_worker.max(1),
        None => per_worker.clamp(64, 25_000),
    }
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime and nginx do; the
/// soft limit is often 1024 where the hard one is far higher) and returns the soft limit then
/// in force; `u64::MAX` where it cannot be read.
fn raise_open_files_limit() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        #[repr(C)]
        struct Rlimit {
            current: u64,
            max: u64,
        }
        unsafe extern "C" {
            fn getrlimit(resource: std::ffi::c_int, limit: *mut Rlimit) -> std::ffi::c_int;
            fn setrlimit(resource: std::ffi::c_int, limit: *const Rlimit) -> std::ffi::c_int;
        }
        const RLIMIT_NOFILE: std::ffi::c_int = 7;
        let mut limit = Rlimit { current: 0, max: 0 };
        // SAFETY: getrlimit writes one rlimit (two unsigned longs on 64-bit Linux) into a
        // struct of that layout; setrlimit only reads it.
        unsafe {
            if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
                return u64::MAX;
            }
            if limit.current < limit.max {
                let raised = Rlimit {
                    current: limit.max,
                    max: limit.max,
                };
                if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                    return limit.max;
                }
            }
        }
        limit.current
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    u64::MAX
}

/// Gives the heap that start-up used and freed (the OpenAPI document is built once, and once
/// more by each worker) back to the system: glibc keeps freed memory for reuse otherwise, and
/// it counted for about 10 MB of the idle RSS (`make bench`).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free pages to the kernel; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Unmaps the gateway's own code and constants from the process, so that only what runs after
/// start-up is mapped again, on use. Start-up (configuration, migrations, the OpenAPI document,
/// every worker's routes) runs code from all over the binary, and the kernel maps the pages
/// around each one touched (fault-around): about 12 MB of the 15 MB of code stayed mapped,
/// two thirds of the idle RSS, though most of it never runs again. Only mappings the process
/// never wrote to are dropped (no private copies: relocated data keeps its pages); their
/// content comes back from the executable, unchanged, when next touched. The kernel's page
/// cache keeps the file's pages either way; what falls is the memory mapped into the gateway.
fn release_start_up_code() {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in untouched_executable_mappings(&smaps, &exe.to_string_lossy()) {
            unsafe extern "C" {
                fn madvise(
                    addr: *mut std::ffi::c_void,
                    len: usize,
                    advice: std::ffi::c_int,
                ) -> std::ffi::c_int;
            }
            const MADV_DONTNEED: std::ffi::c_int = 4;
            // SAFETY: the range is a whole read-only mapping of the executable with no private
            // (written) pages, so dropping it loses nothing: the kernel maps the file's pages
            // again on the next access.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_DONTNEED);
            }
        }
    }
}

#[cfg_attr(
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )),
    allow(dead_code)
)]
/// The private, read-only mappings of `exe` listed in `/proc/self/smaps` that hold no
/// anonymous (written, copied-on-write) pages.
fn untouched_executable_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current = None;
    for line in smaps.lines() {
        if let Some((range, perms, path)) = mapping_header(line) {
            current = (perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p')
                && path == exe)
                .then_some(range);
        } else if let Some(anonymous) = line.strip_prefix("Anonymous:")
            && let Some(range) = current.take()
            && anonymous.trim() == "0 kB"
        {
            found.push(range);
        }
    }
    found
}

#[cfg_attr(
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )),
    allow(dead_code)
)]
/// A mapping's header line in `/proc/<pid>/smaps`: `start-end perms offset dev inode path`.
fn mapping_header(line: &str) -> Option<((usize, usize), &str, &str)> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let range = (
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    );
    let (perms, mut rest) = rest.split_once(' ')?;
    for _ in 0..3 {
        // offset, device, inode
        rest = rest
            .trim_start()
            .split_once(' ')
            .map_or("", |(_, after)| after);
    }
    Some((range, perms, rest.trim()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_connections_leave_room_for_the_gateways_own() {
        use super::connections_per_worker as per_worker;
        // A soft limit of 1024 on two workers: 768 for clients, two a connection, 192 each.
        assert_eq!(per_worker(None, 2, 1024), 192);
        // Never below 64 a worker, never above actix's own 25,000.
        assert_eq!(per_worker(None, 4, 300), 64);
        assert_eq!(per_worker(None, 1, 1 << 20), 25_000);
        assert_eq!(per_worker(None, 2, u64::MAX), 25_000);
        // Configured: shared out as asked.
        assert_eq!(per_worker(Some(3), 2, 1024), 2);
        assert_eq!(per_worker(Some(100_000), 1, 1024), 100_000);
    }

    use super::{Duration, retained_since, untouched_executable_mappings};

    const SMAPS: &str = "\
5647f378f000-5647f3f37000 r--p 00000000 fd:01 1234                       /opt/gw/bin/syno chat
Rss:                1344 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
5647f3f37000-5647f4df7000 r-xp 007a8000 fd:01 1234                       /opt/gw/bin/syno chat
Rss:                8064 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
5647f4df7000-5647f4e70000 r--p 01668000 fd:01 1234                       /opt/gw/bin/syno chat
Rss:                 484 kB
Anonymous:           484 kB
5647f4e70000-5647f4e78000 rw-p 016e1000 fd:01 1234                       /opt/gw/bin/syno chat
Anonymous:            32 kB
5647f4e78000-5647f4e80000 rw-p 00000000 00:00 0 
Anonymous:             0 kB
7f967a45d000-7f967a5b3000 r-xp 00028000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_unwritten_read_only_mappings_are_released() {
        assert_eq!(
            untouched_executable_mappings(SMAPS, "/opt/gw/bin/syno chat"),
            [
                (0x5647_f378_f000, 0x5647_f3f3_7000),
                (0x5647_f3f3_7000, 0x5647_f4df_7000)
            ],
            "the constants and the code; not the relocated (written) data, not libc"
        );
        assert!(untouched_executable_mappings(SMAPS, "/opt/gw/bin/syno").is_empty());
        assert!(untouched_executable_mappings("garbage\n-\n", "/x").is_empty());
    }

    #[test]
    fn a_retention_of_forever_purges_nothing() {
        let now = 1_700_000_000_000;
        assert_eq!(
            retained_since(now, Duration::from_secs(3_600)),
            now - 3_600_000
        );
        for forever in [u64::MAX, i64::MAX as u64, 9_300_000_000_000_000] {
            assert!(retained_since(now, Duration::from_secs(forever)) < 0);
        }
    }
}
