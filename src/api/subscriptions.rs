//! `/subscriptions`: HTTP endpoints that receive the events Chat sent, signed (Standard
//! Webhooks). The signing secret is shown once, in the answer to the creation.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::SubscriptionPath;
use super::error::{ApiError, ProblemCode};
use super::extract::{Json, Query, whole_number};
use super::inbound::store_failure;
use super::{BodyProblems, InvalidInput, NotFound, StoreProblems, Unprocessable};
use crate::auth::{Admin, Authorized};
use crate::events::subscriptions::{Subscription as Stored, new_secret, refuse_host, target};
use crate::events::{EventFilter, EventKind, Events, now_ms};
use crate::forwarded::public_url_for;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(create_subscription)
        .service(list_subscriptions)
        .service(get_subscription)
        .service(change_subscription)
        .service(rotate_secret)
        .service(delete_subscription);
}

/// A new subscription: where to POST the events, and which ones.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://bot.example.org/chat-events", "kind": "slash_command",
    "respond": true}))]
pub struct NewSubscription {
    /// An absolute `http` or `https` URL. Loopback, private, link-local, shared and
    /// unique-local addresses are refused unless the operator allows them
    /// (`subscriptions.allow_private`).
    #[schema(min_length = 1, max_length = 2048)]
    url: String,
    /// Only events received on this inbound.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    inbound: Option<String>,
    /// Only events from this channel.
    #[schema(minimum = 1)]
    channel_id: Option<i64>,
    /// Only events of this kind.
    kind: Option<EventKind>,
    /// Also call this URL synchronously when Chat calls the gateway, and give its
    /// `{"text": …}` answer back to Chat (default false).
    #[serde(default)]
    respond: bool,
}

/// A subscription (never with its secret).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"subscription_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10",
    "url": "https://bot.example.org/chat-events", "inbound": null, "channel_id": null,
    "kind": "slash_command", "respond": true, "enabled": true, "disabled_reason": null,
    "consecutive_failures": 0, "last_delivered_event_id": 42, "created_at": 1764133200000_i64,
    "disabled_at": null, "previous_secret_until": null, "events_missed_through": null}))]
pub struct Subscription {
    subscription_id: String,
    url: String,
    inbound: Option<String>,
    channel_id: Option<i64>,
    kind: Option<EventKind>,
    respond: bool,
    /// `false` once `subscriptions.max_failures` attempts in a row failed, the receiver
    /// answered `410 Gone`, or an operator disabled it; nothing is sent then.
    enabled: bool,
    disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    consecutive_failures: i64,
    /// The newest event the receiver accepted.
    last_delivered_event_id: Option<i64>,
    /// Unix milliseconds.
    created_at: i64,
    /// When it was disabled, Unix milliseconds (while it is).
    disabled_at: Option<i64>,
    /// After a rotation of its secret: until when (Unix milliseconds) the secret replaced still
    /// signs beside the new one (while it does).
    previous_secret_until: Option<i64>,
    /// Events up to this id were deleted by the retention (`events.retention_secs`) before this
    /// subscription was handed them (it was disabled for longer): they were never sent to it.
    events_missed_through: Option<i64>,
}

impl From<Stored> for Subscription {
    fn from(s: Stored) -> Self {
        Self {
            subscription_id: s.id,
            url: s.url,
            inbound: s.filter.inbound,
            channel_id: s.filter.channel_id,
            kind: s.filter.kind,
            respond: s.respond,
            enabled: s.enabled,
            disabled_reason: s.disabled_reason,
            consecutive_failures: s.consecutive_failures,
            last_delivered_event_id: s.last_delivered_event_id,
            created_at: s.created_at,
            disabled_at: s.disabled_at,
            previous_secret_until: s
                .previous_secret
                .map(|(_, until)| until)
                .filter(|until| *until > now_ms()),
            events_missed_through: s.events_missed_through,
        }
    }
}

/// A change to a subscription.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub struct SubscriptionChange {
    /// `true` enables a disabled subscription: its failure count starts again, and the
    /// deliveries that failed or were cancelled since it was disabled are queued again, in
    /// order. `false` disables it and cancels its queued deliveries.
    enabled: bool,
}

/// A subscription just created, with its signing secret (shown this once).
#[derive(Serialize, ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    subscription: Subscription,
    /// `whsec_<base64>`: verify each delivery's `webhook-signature` with it (any Standard
    /// Webhooks library). It is never shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    items: Vec<Subscription>,
}

/// A subscription id is a UUID; anything else cannot exist.
fn subscription_id(raw: &str) -> Result<String, ApiError> {
    Some(raw)
        .filter(|raw| raw.len() == 36)
        .and_then(|raw| uuid::Uuid::parse_str(raw).ok())
        .map(|u| u.to_string())
        .ok_or_else(|| ApiError::invalid("subscription_id must be a UUID"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id}"))
}

/// Checks the URL: http(s) with a host, and (unless allowed) not an internal address.
fn checked_url(raw: &str, allow_private: bool) -> Result<url::Url, ApiError> {
    if raw.len() > 2048 {
        return Err(ApiError::invalid("url must be at most 2048 characters"));
    }
    // Any string is well-formed here (the schema says so): what cannot be used is 422.
    let url = url::Url::parse(raw).map_err(|e| {
        ApiError::new(
            ProblemCode::Unprocessable,
            format!("url is not an absolute URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::new(
            ProblemCode::Unprocessable,
            "url must be an http or https URL with a host",
        ));
    }
    // Credentials in the URL would be stored as typed and shown to every admin key; the
    // receiver checks the signature instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::new(
            ProblemCode::Unprocessable,
            "url must not carry credentials (user:password@); the receiver authenticates \
             the gateway by the signature of each delivery",
        ));
    }
    if !allow_private && let Some(reason) = refuse_host(&url) {
        return Err(ApiError::new(ProblemCode::SubscriptionUrlRefused, reason));
    }
    Ok(url)
}

/// Create a subscription
///
/// Every new event matching the filters is POSTed to `url` as JSON
/// (`{"type": "chat.<kind>", "timestamp": "<RFC 3339>", "data": <Event>}`), signed as Standard
/// Webhooks says: `webhook-id` (the same for every attempt at one event), `webhook-timestamp`
/// (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
/// keyed with the secret returned here, once. Deliveries are in event order. A receiver that
/// does not answer 2xx is retried on the Standard Webhooks schedule (5 s … 24 h), with its
/// `Retry-After` honoured on 429, 502, 503 and 504; 429 is not counted as a failure, `410 Gone`
/// disables the subscription, and so do `subscriptions.max_failures` failures in a row. Scope:
/// admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    request_body = NewSubscription,
    responses((status = 201, body = CreatedSubscription,
            headers(("Location" = String, description = "The new subscription"))),
        InvalidInput, Unprocessable, BodyProblems, StoreProblems))]
#[post("/subscriptions")]
pub async fn create_subscription(
    _: Authorized<Admin>,
    req: HttpRequest,
    body: Json<NewSubscription>,
    events: web::Data<Events>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = checked_url(&body.url, events.subscriptions.allow_private)?;
    if let Some(inbound) = &body.inbound
        && (inbound.is_empty()
            || inbound.len() > 64
            || !inbound
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(ApiError::invalid(
            "inbound must be 1 to 64 letters, digits, - or _",
        ));
    }
    // A filter on an inbound that is not configured would match nothing, silently.
    if let Some(inbound) = &body.inbound
        && !events.inbounds.contains_key(inbound)
    {
        let configured: Vec<&str> = events.inbounds.keys().map(String::as_str).collect();
        return Err(ApiError::new(
            ProblemCode::Unprocessable,
            format!(
                "no inbound named {inbound:?} is configured (inbound.<name>); configured: {}",
                match configured.is_empty() {
                    true => "none".to_owned(),
                    false => configured.join(", "),
                }
            ),
        ));
    }
    if body.channel_id.is_some_and(|c| c < 1) {
        return Err(ApiError::invalid("channel_id must be a positive integer"));
    }
    let stored = Stored {
        id: uuid::Uuid::new_v4().to_string(),
        url: url.to_string(),
        secret: new_secret(),
        filter: EventFilter {
            inbound: body.inbound,
            channel_id: body.channel_id,
            kind: body.kind,
        },
        respond: body.respond,
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        last_delivered_event_id: None,
        created_at: now_ms(),
        disabled_at: None,
        previous_secret: None,
        events_missed_through: None,
    };
    // The events from now on: earlier ones are on the event stream.
    let after = events
        .store
        .latest_event_id()
        .await
        .map_err(store_failure)?;
    events
        .store
        .insert_subscription(&stored, after)
        .await
        .map_err(store_failure)?;
    tracing::info!(subscription = %stored.id, host = url.host_str().unwrap_or_default(), respond = stored.respond, "subscription created");
    let secret = stored.secret.expose_secret().to_owned();
    let response = HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            public_url_for(&req, &format!("/api/v1/subscriptions/{}", stored.id)),
        ))
        .json(CreatedSubscription {
            subscription: stored.into(),
            secret,
        });
    // The secret is shown once: never kept by the Idempotency-Key layer.
    Ok(crate::api::idempotency::holds_secrets(
        response,
        &["secret"],
    ))
}

/// List subscriptions
///
/// Oldest first, without their secrets. Scope: admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    responses((status = 200, body = SubscriptionList), StoreProblems))]
#[get("/subscriptions")]
pub async fn list_subscriptions(
    _: Authorized<Admin>,
    events: web::Data<Events>,
) -> Result<web::Json<SubscriptionList>, ApiError> {
    let all = events.store.subscriptions().await.map_err(store_failure)?;
    Ok(web::Json(SubscriptionList {
        items: all.into_iter().map(Subscription::from).collect(),
    }))
}

/// Get a subscription
///
/// With its state: `enabled`, why it was disabled, failures in a row, the last event
/// delivered. Scope: admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    params(SubscriptionPath),
    responses((status = 200, body = Subscription), InvalidInput, NotFound, StoreProblems))]
#[get("/subscriptions/{subscription_id}")]
pub async fn get_subscription(
    _: Authorized<Admin>,
    path: web::Path<SubscriptionPath>,
    events: web::Data<Events>,
) -> Result<web::Json<Subscription>, ApiError> {
    let id = subscription_id(&path.subscription_id)?;
    match events
        .store
        .subscription(&id)
        .await
        .map_err(store_failure)?
    {
        Some(s) => Ok(web::Json(s.into())),
        None => Err(not_found(&id)),
    }
}

/// Enable or disable a subscription
///
/// Enabling a disabled subscription (after the receiver was fixed) resets its failure count
/// and queues again, in their order, the deliveries that failed or were cancelled since it was
/// disabled; the events after that follow. Disabling cancels its queued deliveries, which
/// enabling brings back. Either is idempotent. Scope: admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    params(SubscriptionPath),
    request_body = SubscriptionChange,
    responses((status = 200, body = Subscription), InvalidInput, NotFound, BodyProblems,
        StoreProblems))]
#[patch("/subscriptions/{subscription_id}")]
pub async fn change_subscription(
    _: Authorized<Admin>,
    path: web::Path<SubscriptionPath>,
    body: Json<SubscriptionChange>,
    events: web::Data<Events>,
) -> Result<web::Json<Subscription>, ApiError> {
    let id = subscription_id(&path.subscription_id)?;
    let store = &events.store;
    let now = now_ms();
    let found = if body.enabled {
        let max_age_ms =
            i64::try_from(events.subscriptions.max_age_secs).unwrap_or(i64::MAX / 2_000) * 1000;
        let requeued = store
            .enable_subscription(&id, &target(&id), now, now + max_age_ms)
            .await
            .map_err(store_failure)?;
        if let Some(n) = requeued {
            tracing::info!(subscription = %id, requeued = n, "subscription enabled");
        }
        requeued.is_some()
    } else {
        store
            .disable_subscription(
                &id,
                &target(&id),
                crate::store::subscriptions::DISABLED_BY_OPERATOR,
                now,
            )
            .await
            .map_err(store_failure)?
    };
    if !found {
        return Err(not_found(&id));
    }
    match store.subscription(&id).await.map_err(store_failure)? {
        Some(s) => Ok(web::Json(s.into())),
        None => Err(not_found(&id)),
    }
}

/// How long a replaced secret keeps signing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// Seconds the secret being replaced keeps signing deliveries beside the new one, so the
    /// receiver can switch over without refusing any: 0 to 604800 (7 days), default 86400.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 604800)]
    #[serde(default, deserialize_with = "whole_number")]
    grace_secs: Option<u64>,
}

/// A subscription's new signing secret (shown this once).
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The new `whsec_<base64>`. It is never shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
    /// Until when (Unix ms) deliveries also carry a signature made with the secret replaced.
    previous_secret_until: i64,
}

/// Rotate a subscription's signing secret
///
/// Answers a new secret, once. Deliveries are signed with it from now on, and for
/// `grace_secs` also with the secret it replaces: `webhook-signature` then holds both
/// (`v1,<new> v1,<old>`, space-separated), which Standard Webhooks verifiers accept with either
/// secret, so the receiver can switch to the new one at its pace. A second rotation within the
/// grace drops the oldest. Its queue, its place in the events and its state are unchanged.
/// Scope: admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    params(SubscriptionPath, SecretRotation),
    responses((status = 200, body = RotatedSecret), InvalidInput, NotFound, StoreProblems))]
#[post("/subscriptions/{subscription_id}/secret")]
pub async fn rotate_secret(
    _: Authorized<Admin>,
    path: web::Path<SubscriptionPath>,
    query: Query<SecretRotation>,
    events: web::Data<Events>,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path.subscription_id)?;
    let grace_secs = query.grace_secs.unwrap_or(86_400);
    if grace_secs > 604_800 {
        return Err(ApiError::invalid(
            "grace_secs must be at most 604800 (7 days)",
        ));
    }
    let secret = new_secret();
    let previous_secret_until = now_ms().saturating_add(grace_secs as i64 * 1000);
    if !events
        .store
        .rotate_subscription_secret(
            &id,
            &secret,
            (grace_secs > 0).then_some(previous_secret_until),
        )
        .await
        .map_err(store_failure)?
    {
        return Err(not_found(&id));
    }
    tracing::info!(subscription = %id, grace_secs, "subscription secret rotated");
    let response = HttpResponse::Ok().json(RotatedSecret {
        secret: secret.expose_secret().to_owned(),
        previous_secret_until,
    });
    // Shown once: never kept by the Idempotency-Key layer.
    Ok(crate::api::idempotency::holds_secrets(
        response,
        &["secret"],
    ))
}

/// Delete a subscription
///
/// Nothing more is sent to it; its queued deliveries are cancelled. Scope: admin.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "subscriptions",
    params(SubscriptionPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, StoreProblems))]
#[delete("/subscriptions/{subscription_id}")]
pub async fn delete_subscription(
    _: Authorized<Admin>,
    path: web::Path<SubscriptionPath>,
    events: web::Data<Events>,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path.subscription_id)?;
    if events
        .store
        .delete_subscription(&id, &target(&id), now_ms())
        .await
        .map_err(store_failure)?
    {
        tracing::info!(subscription = %id, "subscription deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found(&id))
    }
}
