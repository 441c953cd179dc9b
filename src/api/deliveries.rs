//! `/deliveries`: messages accepted with `Prefer: respond-async` (RFC 7240), and the shared
//! 202 answer of the sending routes.

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{DeliveryId, DeliveryList, DeliveryPath, Items, Limit};
use super::extract::Query;
use super::{InvalidInput, NotFound, StoreProblems};
use crate::api::error::{ApiError, Problem, ProblemCode};
use crate::api::idempotency::KeyedRequest;
use crate::auth::{Authorized, Read, Write};
use crate::chunking::Parts;
use crate::delivery::{Job, Outbox, now_ms};
use crate::forwarded::public_url_for;
use crate::store::deliveries::{DeliveryRow, DeliveryState, Transition, callers};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_deliveries)
        .service(get_delivery)
        .service(retry_delivery)
        .service(cancel_delivery);
}

/// The outbox, as handlers receive it.
pub type Deliveries = web::Data<Outbox>;

/// Whether the caller asked for `Prefer: respond-async`.
pub(super) fn wants_async(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// A synchronous send's turn. While the outbox still has earlier messages for the job's
/// target, the send waits for them (`delivery.queue_wait_ms`); if they are not delivered by
/// then, it is committed behind them and answered 202. `None`: send now. Either way it cannot
/// overtake them. A store that cannot be asked is a 503: the send might overtake them.
pub(super) async fn queued_behind(
    req: &HttpRequest,
    outbox: &Outbox,
    caller: Option<&str>,
    job: &Job,
    text: &str,
) -> Option<Result<HttpResponse, ApiError>> {
    // A text too long to send is refused now, not after the wait.
    let parts = match outbox.part_limits().split(text) {
        Ok(parts) => parts,
        Err(too_long) => return Some(Err(too_long.into())),
    };
    let target = job.target();
    match outbox.wait_turn(&target, outbox.queue_wait()).await {
        Ok(true) => None,
        Ok(false) => {
            tracing::info!(
                %target,
                "earlier messages to the target are still in the outbox: the send is queued behind them"
            );
            Some(accept(req, outbox, caller, job, parts, false).await)
        }
        Err(error) => Some(Err(error.into())),
    }
}

/// A file to `channel_id` waits its turn like a message ([`queued_behind`]), at most
/// `patience`, and then a single post's turn at the channel (not inside a long message's
/// posts), held until dropped. The outbox does not keep files, so one whose turn does not
/// come is refused unsent (503 `outbox_ahead`) rather than overtaking the messages ahead of it.
pub(super) async fn file_turn(
    outbox: &Outbox,
    channel_id: crate::domain::ChannelId,
    patience: std::time::Duration,
) -> Result<crate::delivery::TargetHold, ApiError> {
    let target = Job::Channel {
        channel_id,
        thread_id: None,
    }
    .target();
    if outbox.wait_turn(&target, patience).await? {
        return Ok(outbox.hold_target(&target, false).await);
    }
    Err(ApiError::new(
        ProblemCode::OutboxAhead,
        format!(
            "earlier messages to channel {channel_id} are still being delivered by the outbox \
             (GET /api/v1/deliveries); the file was not sent, so that it does not overtake them"
        ),
    )
    .with_retry_after(5))
}

/// Commits the message to the store and answers 202 with where to follow it; `asked` when
/// the caller preferred `respond-async`.
pub(super) async fn accept(
    req: &HttpRequest,
    outbox: &Outbox,
    caller: Option<&str>,
    job: &Job,
    parts: Parts,
    asked: bool,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.unwrap_or(callers::ANONYMOUS);
    // With an Idempotency-Key, under it: a retry of a request cut off after this commit gets
    // the same delivery, not a second one.
    let keyed = req.extensions().get::<KeyedRequest>().cloned();
    let id = match keyed {
        Some(keyed) => {
            outbox
                .enqueue_event(caller, job, parts, &keyed.delivery_key)
                .await?
                .0
        }
        None => outbox.enqueue(caller, job, parts).await?,
    };
    Ok(accepted(req, id, asked))
}

/// 202 naming the delivery; `asked` when the caller preferred `respond-async`.
pub(super) fn accepted(req: &HttpRequest, id: String, asked: bool) -> HttpResponse {
    let mut response = HttpResponse::Accepted();
    response.insert_header((
        header::LOCATION,
        public_url_for(req, &format!("/api/v1/deliveries/{id}")),
    ));
    if asked {
        response.insert_header(("Preference-Applied", "respond-async"));
    }
    response.json(DeliveryAccepted {
        delivery_id: id,
        state: "queued",
    })
}

/// A message accepted for asynchronous delivery.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"delivery_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10", "state": "queued"}))]
pub struct DeliveryAccepted {
    delivery_id: String,
    /// Always `queued`.
    state: &'static str,
}

/// One message the outbox delivers: one accepted with `Prefer: respond-async` or taken over
/// after a synchronous send stopped part way (`Idempotency-Key`), a `/hooks` message, or an
/// event POSTed to a subscription.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    delivery_id: String,
    /// `queued`, `sending`, `delivered`, `failed` (for good) or `cancelled`.
    state: &'static str,
    /// Send attempts so far.
    attempts: i64,
    /// The last failure, as a problem document; kept once the message is delivered (why the
    /// attempts before failed).
    #[schema(value_type = Option<Object>)]
    last_error: Option<serde_json::Value>,
    /// Posts created so far, in chunk order (a long message becomes several; a chatbot message
    /// has one per recipient and chunk; an incoming webhook and a subscription name none).
    post_ids: Vec<i64>,
    /// Number of parts the message is sent as (posts per recipient; 1 for a subscription's
    /// POST).
    chunks: usize,
    /// Chunks posted so far.
    chunks_posted: usize,
    /// `true` when a token send was repeated after an answer that never came: it may have
    /// been posted more than once, once for each such attempt (an incoming webhook cannot
    /// check what it posted; a chatbot can, unless DSM lets it read neither its channels nor
    /// the conversation).
    at_least_once: bool,
    /// `true` while a chunk was sent and DSM's answer never came: the next attempt looks for
    /// that post before sending anything. On a cancelled delivery it means the chunk may have
    /// been posted.
    outcome_unknown: bool,
    /// Unix milliseconds.
    created_at: i64,
    updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<i64>,
    /// When a queued delivery is tried next (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<i64>,
    /// When it fails for good if still not delivered.
    expires_at: i64,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        let mut posted: Vec<i64> = row.posts.iter().map(|(c, _)| *c).collect();
        posted.dedup();
        Self {
            post_ids: row.posts.iter().filter_map(|(_, p)| *p).collect(),
            chunks: row.chunks.len(),
            chunks_posted: posted.len(),
            last_error: row
                .last_error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            next_attempt_at: (row.state == DeliveryState::Queued).then_some(row.next_attempt_at),
            delivery_id: row.id,
            state: row.state.as_str(),
            attempts: row.attempts,
            at_least_once: row.at_least_once,
            outcome_unknown: row.uncertain_since.is_some(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            expires_at: row.expires_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this state.
    #[param(pattern = "^(queued|sending|delivered|failed|cancelled)$")]
    state: Option<String>,
    /// At most this many (default 50, at most 500).
    #[serde(default)]
    #[param(inline)]
    limit: Limit<50, 500>,
    /// Continue after this delivery id (the last one of the previous page); 404 when it names
    /// no delivery (finished ones are removed after `delivery.retention_secs`).
    after: Option<DeliveryId>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no delivery {id}"))
}

/// A delivery the caller may retry or cancel: one its own key handed over, or any with an
/// admin key. Every key with the read scope can see them all (they hold no message text); a
/// write key changing another key's, a hook's or a subscription's messages could silence them.
async fn owned_delivery(
    auth: &Authorized<Write>,
    outbox: &Outbox,
    id: &str,
) -> Result<DeliveryRow, ApiError> {
    let Some(row) = outbox.store().delivery(id).await? else {
        return Err(not_found(id));
    };
    let own = callers::is_key(&row.caller) && auth.key_name.as_deref() == Some(&row.caller);
    if !(own || auth.is_admin()) {
        return Err(ApiError::new(
            ProblemCode::InsufficientScope,
            format!(
                "delivery {id} was handed over by another key, a hook or a subscription; only \
                 the key that handed it over or a key with the `admin` scope can change it"
            ),
        ));
    }
    Ok(row)
}

/// List asynchronous deliveries
///
/// In order of arrival. Scope: read.
#[utoipa::path(security(("bearer" = ["read"])), tag = "deliveries",
    params(DeliveryQuery),
    responses((status = 200, body = DeliveryList), InvalidInput,
        (status = 404, description = "`after` names no delivery", body = Problem, content_type = "application/problem+json"),
        StoreProblems))]
#[get("/deliveries")]
pub async fn list_deliveries(
    _: Authorized<Read>,
    query: Query<DeliveryQuery>,
    outbox: Deliveries,
) -> Result<web::Json<Items<Delivery>>, ApiError> {
    let query = query.into_inner();
    let state = match query.state.as_deref() {
        Some(raw) => Some(DeliveryState::parse(raw).ok_or_else(|| {
            ApiError::invalid("state must be one of queued, sending, delivered, failed, cancelled")
        })?),
        None => None,
    };
    let (limit, after) = (
        query.limit.get(),
        query.after.as_ref().map(DeliveryId::as_str),
    );
    let Some(rows) = outbox
        .store()
        .deliveries(state, after, i64::from(limit))
        .await?
    else {
        return Err(ApiError::not_found(
            "after names no delivery: never one, or finished longer ago than \
             delivery.retention_secs and removed; list again without after",
        ));
    };
    Ok(web::Json(Items {
        items: rows.into_iter().map(Delivery::from).collect(),
    }))
}

/// Get an asynchronous delivery
///
/// Scope: read.
#[utoipa::path(security(("bearer" = ["read"])), tag = "deliveries",
    params(DeliveryPath),
    responses((status = 200, body = Delivery), InvalidInput, NotFound, StoreProblems))]
#[get("/deliveries/{delivery_id}")]
pub async fn get_delivery(
    _: Authorized<Read>,
    path: web::Path<DeliveryPath>,
    outbox: Deliveries,
) -> Result<web::Json<Delivery>, ApiError> {
    let id = path.into_inner().delivery_id.to_string();
    let row = outbox.store().delivery(&id).await?;
    row.map(|r| web::Json(r.into()))
        .ok_or_else(|| not_found(&id))
}

/// Retry a failed delivery
///
/// Puts a `failed` delivery back in the queue, due now, with a fresh `delivery.max_age_secs`
/// (`subscriptions.max_age_secs` for an event POSTed to a subscription), behind what its
/// target has queued (it never goes out between another message's parts; listings show it in
/// its new place). Chunks already posted are not posted again. 409 for a delivery in any other state. Scope: write,
/// for a delivery the key handed over itself; admin for any other (a hook's, a subscription's).
#[utoipa::path(security(("bearer" = ["write"])), tag = "deliveries",
    params(DeliveryPath),
    responses((status = 200, body = Delivery), InvalidInput, NotFound,
        (status = 409, description = "The delivery is not failed", body = Problem, content_type = "application/problem+json"),
        StoreProblems))]
#[post("/deliveries/{delivery_id}/retry")]
pub async fn retry_delivery(
    auth: Authorized<Write>,
    path: web::Path<DeliveryPath>,
    outbox: Deliveries,
) -> Result<web::Json<Delivery>, ApiError> {
    let id = path.into_inner().delivery_id.to_string();
    let row = owned_delivery(&auth, &outbox, &id).await?;
    let now = now_ms();
    let result = outbox
        .store()
        .retry_delivery(&id, now, now + outbox.max_age_ms_for(&row.target))
        .await?;
    outbox.note_queued(&row.target);
    settle(
        &outbox,
        &id,
        result,
        "only a failed delivery can be retried",
    )
    .await
}

/// Cancel a queued delivery
///
/// 409 when it is being sent or already finished. Scope: write, for a delivery the key handed
/// over itself; admin for any other (a hook's, a subscription's).
#[utoipa::path(security(("bearer" = ["write"])), tag = "deliveries",
    params(DeliveryPath),
    responses((status = 200, body = Delivery), InvalidInput, NotFound,
        (status = 409, description = "The delivery is not queued", body = Problem, content_type = "application/problem+json"),
        StoreProblems))]
#[delete("/deliveries/{delivery_id}")]
pub async fn cancel_delivery(
    auth: Authorized<Write>,
    path: web::Path<DeliveryPath>,
    outbox: Deliveries,
) -> Result<web::Json<Delivery>, ApiError> {
    let id = path.into_inner().delivery_id.to_string();
    owned_delivery(&auth, &outbox, &id).await?;
    let result = outbox.store().cancel_delivery(&id, now_ms()).await?;
    settle(
        &outbox,
        &id,
        result,
        "only a queued delivery can be cancelled",
    )
    .await
}

async fn settle(
    outbox: &Outbox,
    id: &str,
    result: Transition,
    refusal: &str,
) -> Result<web::Json<Delivery>, ApiError> {
    match result {
        Transition::Done => {
            outbox.wake();
            let row = outbox.store().delivery(id).await?;
            row.map(|r| web::Json(r.into()))
                .ok_or_else(|| not_found(id))
        }
        Transition::NotFound => Err(not_found(id)),
        Transition::WrongState(state) => Err(ApiError::new(
            ProblemCode::Conflict,
            format!("{refusal}; delivery {id} is {state}"),
        )),
    }
}
