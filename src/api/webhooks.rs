//! `/webhooks/incoming`: sending through Chat incoming webhooks. Configured webhooks are used by
//! name, so their tokens never leave the gateway; a caller may also bring its own token.

use std::cell::Cell;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{ConfiguredWebhookList, Handover, Items, WebhookPath, outgoing_message};
use super::deliveries::{Deliveries, wants_async};
use super::extract::Json;
use super::{
    AppState, BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, POST_COUNT_HEADER, State,
    Unprocessable, send_text,
};
use crate::api::error::ApiError;
use crate::auth::{Authorized, Read, Write};
use crate::config::{TokenKind, normalize_token};
use crate::delivery::Job;
use crate::domain::{HttpUrl, MessageText};
use crate::forwarded::public_url_for;
use crate::upstream::{DsmClient, ExternalMessage, UpstreamError};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_incoming_webhooks)
        .service(send_with_configured_webhook)
        .service(send_with_caller_token);
}

/// Header carrying a caller's own incoming-webhook token.
const CHAT_TOKEN_HEADER: &str = "X-Chat-Token";
/// Chat's tokens are 64 letters and digits (upstream/PROTOCOL.md [C5]).
const TOKEN_LEN: usize = 64;

/// A configured incoming webhook.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"name": "alerts", "url": "https://example.org/chat/api/v1/webhooks/incoming/alerts",
    "upstream_url": "https://nas.example:5001/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2&token=%22****%22"}))]
pub struct ConfiguredWebhook {
    /// The configured name.
    name: String,
    /// Where to `POST` messages through the gateway: an absolute URL under the gateway's public
    /// base (`server.public_url`, else the origin the caller used, through a trusted proxy with
    /// its prefix).
    url: String,
    /// The Chat URL the gateway posts to, with the token masked.
    upstream_url: String,
}

/// A message for an incoming webhook.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "Backup done: 100% & verified <https://nas.example/logs|logs>",
    "file_url": "https://files.example.org/report.pdf"}))]
pub struct WebhookMessageBody {
    /// The text, sent byte for byte. `<https://url|label>` makes a link.
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    text: String,
    /// A public absolute http(s) URL of a file (at most 32 MB) the NAS downloads and attaches.
    /// Loopback, private and link-local addresses and `localhost` are refused (422) unless
    /// the operator allows them.
    #[serde(default)]
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$"
    )]
    file_url: Option<String>,
}

/// DSM accepted the message (it does not say which post it created).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"accepted": true, "webhook": "alerts"}))]
pub struct WebhookReceipt {
    accepted: bool,
    /// The configured webhook used; absent when the caller sent the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
}

/// Sends `text` through an incoming webhook, as several posts when it is long (the file goes
/// with the first part that DSM accepts). Answers how many posts were sent.
pub(crate) async fn send_incoming_text(
    state: &AppState,
    chat: &DsmClient,
    token: &SecretString,
    text: &MessageText,
    file_url: Option<&HttpUrl>,
    describe: impl Fn(UpstreamError) -> ApiError,
) -> Result<usize, ApiError> {
    let file_sent = Cell::new(false);
    let file_sent = &file_sent;
    let sent = send_text(
        state,
        text,
        |part| async move {
            let message = ExternalMessage {
                text: Some(&part),
                file_url: file_url.filter(|_| !file_sent.get()),
            };
            let result = chat.send_incoming(token, &message).await;
            file_sent.set(file_sent.get() || result.is_ok());
            result
        },
        describe,
        |_| Vec::new(),
    )
    .await?;
    Ok(sent.len())
}

fn receipt(webhook: Option<String>, count: usize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((POST_COUNT_HEADER, count.to_string()))
        .json(WebhookReceipt {
            accepted: true,
            webhook,
        })
}

/// List the configured incoming webhooks
///
/// Names only: their tokens stay in the gateway. No call to DSM.
#[utoipa::path(security(("bearer" = ["read"])), tag = "webhooks",
    // Unique: the admin listing of DSM's webhooks is `list_incoming_webhooks`.
    operation_id = "list_configured_incoming_webhooks",
    responses((status = 200, body = ConfiguredWebhookList), CommonProblems))]
#[get("/webhooks/incoming")]
pub async fn list_incoming_webhooks(
    _: Authorized<Read>,
    req: HttpRequest,
    state: State,
) -> web::Json<Items<ConfiguredWebhook>> {
    let upstream_url = state.upstream.masked_incoming_webhook_url();
    let items = state
        .tokens
        .iter()
        .filter(|(_, token)| token.kind == TokenKind::Webhook)
        .map(|(name, _)| ConfiguredWebhook {
            url: public_url_for(&req, &format!("/api/v1/webhooks/incoming/{name}")),
            name: name.clone(),
            upstream_url: upstream_url.clone(),
        })
        .collect();
    web::Json(Items { items })
}

/// Send through a configured incoming webhook
///
/// Posts into the webhook's channel with the token configured under `name`.
#[utoipa::path(security(("bearer" = ["write"])), tag = "webhooks",
    params(WebhookPath,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the message is stored; the outbox delivers it, paced at `delivery.rate_per_sec`")),
    request_body = WebhookMessageBody,
    responses((status = 200, body = WebhookReceipt,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))), (status = 202, description = "Committed to the outbox (`Location` names the delivery): with `Prefer: respond-async` (`Preference-Applied: respond-async`), or when the outbox still has earlier messages for this webhook that are not delivered within `delivery.queue_wait_ms` (the message is queued behind them rather than overtaking them)", body = super::deliveries::DeliveryAccepted),
        InvalidInput, NotFound, Unprocessable, BodyProblems,
        CommonProblems))]
#[post("/webhooks/incoming/{name}")]
pub async fn send_with_configured_webhook(
    auth: Authorized<Write>,
    path: web::Path<WebhookPath>,
    body: Json<WebhookMessageBody>,
    state: State,
    chat: Dsm,
    req: HttpRequest,
    outbox: Deliveries,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    let token = state.integration_token(&name, TokenKind::Webhook)?;
    let (text, file_url) =
        outgoing_message(&body.text, body.file_url.as_deref(), &state.file_urls)?;
    let handover = Handover {
        req: &req,
        chat: &chat,
        outbox: &outbox,
        caller: auth.key_name.as_deref(),
        job: Job::Webhook {
            name: name.clone(),
            file_url: body.file_url.clone(),
        },
    };
    if let Some(answered) = handover.accept_if_asked_or_queued(&text).await {
        return answered;
    }
    let _turn = handover.hold_target(&text).await;
    let count = send_incoming_text(
        &state,
        &chat,
        token,
        &text,
        file_url.as_ref(),
        ApiError::from,
    )
    .await?;
    Ok(receipt(Some(name), count))
}

/// Send with your own incoming-webhook token
///
/// Posts through the configured NAS with the token in `X-Chat-Token` (as copied from Chat:
/// surrounding `"` or `%22` are removed). A token DSM rejects is a 403 `chat_token_rejected`.
///
/// `Prefer: respond-async` is refused (422): the outbox would have to keep the caller's token
/// at rest until delivery. Configure the token (`tokens.<name>`) and use
/// `/webhooks/incoming/{name}` for asynchronous delivery.
#[utoipa::path(security(("bearer" = ["write"])), tag = "webhooks",
    params(("X-Chat-Token" = String, Header, pattern = "^([A-Za-z0-9]{64}|\"[A-Za-z0-9]{64}\"|%22[A-Za-z0-9]{64}%22)$",
        description = "The incoming webhook's 64-character token")),
    request_body = WebhookMessageBody,
    responses((status = 200, body = WebhookReceipt,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))), InvalidInput, Unprocessable, BodyProblems, CommonProblems))]
#[post("/webhooks/incoming")]
pub async fn send_with_caller_token(
    _: Authorized<Write>,
    req: HttpRequest,
    body: Json<WebhookMessageBody>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    if wants_async(&req) {
        return Err(ApiError::new(
            crate::api::error::ProblemCode::Unprocessable,
            "Prefer: respond-async is not offered with X-Chat-Token: the gateway does not keep callers' tokens at rest; configure the token as tokens.<name> and send to /api/v1/webhooks/incoming/{name}",
        ));
    }
    let mut sent = req.headers().get_all(CHAT_TOKEN_HEADER);
    let raw = sent.next().and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::invalid(format!(
            "send the incoming webhook's token in the {CHAT_TOKEN_HEADER} header"
        ))
    })?;
    // Which of two tokens was meant would be a guess, and it picks where the message goes.
    if sent.next().is_some() {
        return Err(ApiError::invalid(format!(
            "send the {CHAT_TOKEN_HEADER} header once"
        )));
    }
    let token = normalize_token(raw);
    if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid(format!(
            "{CHAT_TOKEN_HEADER} must be a {TOKEN_LEN}-character token of letters and digits"
        )));
    }
    let token = SecretString::from(token);
    let (text, file_url) =
        outgoing_message(&body.text, body.file_url.as_deref(), &state.file_urls)?;
    let count = send_incoming_text(
        &state,
        &chat,
        &token,
        &text,
        file_url.as_ref(),
        ApiError::for_caller_token,
    )
    .await?;
    Ok(receipt(None, count))
}
