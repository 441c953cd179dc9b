//! `/hooks/{name}`: endpoints that speak the senders' languages (Slack, Mattermost,
//! Alertmanager, Grafana, Discord, generic JSON, text). Outside `/api/v1` because those tools
//! cannot send our API keys: the hook's secret is in the path (like Slack's URLs) or in
//! `Authorization: Bearer`. Bodies become Chat text in [`crate::formats`]; every send goes
//! through [`dispatch`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{ConnectionType, StatusCode, header};
use actix_web::{
    HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, get, post, put, web,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::deliveries::Deliveries;
use super::hook_signature::Signing;
use super::idempotency::IDEMPOTENT_REPLAYED;
use super::{Dsm, State};
use crate::api::error::{ApiError, ProblemCode};
use crate::auth::hash_key;
use crate::config::{HookSettings, TokenKind};
use crate::delivery::{Job, Outbox};
use crate::domain::{ChannelId, HttpUrl, MessageText, TextRefusal, UserId};
use crate::formats::{self, Format, FormatError};
use crate::forwarded::public_url_for;
use crate::store::deliveries::{DeliveryState, EventKey, callers};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(hook_with_path_secret)
        .service(hook_with_bearer_secret)
        .service(put_hook_with_path_secret)
        .service(put_hook_with_bearer_secret)
        .service(get_hook_with_path_secret)
        .service(get_hook_with_bearer_secret);
}

/// Largest hook body: Alertmanager and Grafana groups can be large (senders-delivery-events A.11).
pub(super) const MAX_HOOK_BODY: usize = 5 * 1024 * 1024;
/// Hook bodies read and rendered at once, across workers: each may hold [`MAX_HOOK_BODY`] and
/// a few times that while it is rendered. As many again for requests a signed hook admits on
/// the mere presence of a signature, checked once its body is read ([`HookBodies`]).
pub const BODIES_AT_ONCE: usize = 16;
/// Bodies of the second kind one client address may have read at once: a sender without any
/// secret trickling bodies in must not hold all of them.
const UNVERIFIED_PER_ADDRESS: usize = 2;
/// How long a hook request waits for one of those before a 503 (a burst of senders).
const BODY_PERMIT_WAIT: Duration = Duration::from_secs(2);

/// How a request got past a hook's door, before its body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// It presented the hook's secret.
    Secret,
    /// It carries a signature header, which only its body can prove (anyone can send one).
    SignatureToCheck,
}

/// The permits to read hook bodies: those of callers that proved a secret apart from those
/// that only claim a signature, so slow unverified bodies cannot keep every hook busy; and of
/// the latter, at most [`UNVERIFIED_PER_ADDRESS`] a client address.
pub struct HookBodies {
    proven: Arc<tokio::sync::Semaphore>,
    unverified: Arc<tokio::sync::Semaphore>,
    unverified_by_address: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// Unverified bodies one address may have read at once.
    per_address: usize,
}

/// A body's permit; an unverified one also counts against its address until dropped.
pub(super) struct BodyPermit<'a> {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _counted: Option<AddressCount<'a>>,
}

/// One unverified body counted against `ip`, until dropped.
struct AddressCount<'a> {
    bodies: &'a HookBodies,
    ip: IpAddr,
}

impl Drop for AddressCount<'_> {
    fn drop(&mut self) {
        let mut held = self.bodies.held_by_address();
        if let std::collections::hash_map::Entry::Occupied(mut n) = held.entry(self.ip) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

impl HookBodies {
    pub fn new() -> Self {
        Self::with_per_address(UNVERIFIED_PER_ADDRESS)
    }

    /// The permits for `/inbound/…`'s bodies, all unverified (Chat's token is inside them).
    pub fn for_inbound() -> Self {
        Self::with_per_address(super::inbound::BODIES_PER_ADDRESS)
    }

    /// As [`Self::new`], with `per_address` unverified bodies an address may have read at once.
    fn with_per_address(per_address: usize) -> Self {
        Self {
            proven: Arc::new(tokio::sync::Semaphore::new(BODIES_AT_ONCE)),
            unverified: Arc::new(tokio::sync::Semaphore::new(BODIES_AT_ONCE)),
            unverified_by_address: Default::default(),
            per_address,
        }
    }

    fn held_by_address(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, usize>> {
        self.unverified_by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A permit to read a body admitted so, waiting [`BODY_PERMIT_WAIT`] at most; `None`: busy.
    pub(super) async fn permit(
        &self,
        admission: Admission,
        req: &HttpRequest,
    ) -> Option<BodyPermit<'_>> {
        let (slots, counted) = match admission {
            Admission::Secret => (&self.proven, None),
            Admission::SignatureToCheck => {
                // No address known (not over TCP): such callers share one count.
                let ip = crate::ratelimit::client_address(req)
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                let mut held = self.held_by_address();
                let n = held.entry(ip).or_default();
                if *n >= self.per_address {
                    return None;
                }
                *n += 1;
                (&self.unverified, Some(AddressCount { bodies: self, ip }))
            }
        };
        let waiting = tokio::time::timeout(BODY_PERMIT_WAIT, slots.clone().acquire_owned());
        match waiting.await {
            Ok(Ok(permit)) => Some(BodyPermit {
                _permit: permit,
                _counted: counted,
            }),
            _ => None,
        }
    }
}

impl Default for HookBodies {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a hook posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookTarget {
    Channel(Address),
    /// A direct message from the gateway's account.
    User(Address),
    /// A configured incoming-webhook token, by name.
    Token(String),
}

/// An id, or a name resolved through the cached lists on each use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Id(u64),
    Name(String),
}

impl Address {
    fn parse(raw: &str) -> Self {
        match raw.trim().parse::<u64>() {
            Ok(id) if id > 0 => Self::Id(id),
            _ => Self::Name(raw.trim().to_owned()),
        }
    }
}

impl std::fmt::Display for HookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = |a: &Address| match a {
            Address::Id(id) => id.to_string(),
            Address::Name(name) => format!("{name:?}"),
        };
        match self {
            Self::Channel(a) => write!(f, "channel {}", address(a)),
            Self::User(a) => write!(f, "user {}", address(a)),
            Self::Token(name) => write!(f, "incoming webhook {name:?}"),
        }
    }
}

/// A configured hook, ready to serve.
pub struct Hook {
    pub target: HookTarget,
    /// The secret in the URL or bearer token; a signed hook may have none.
    secret_hash: Option<SecretString>,
    /// The sender's HMAC signature, checked on every body when configured.
    signing: Option<Signing>,
    pub format: Option<Format>,
    pub template: Option<String>,
    pub markup: formats::Markup,
    /// How long a second copy of a notification is the same one ([`formats::event_key`]).
    duplicate_window: Duration,
}

/// The default of `hooks.<name>.duplicate_window_secs`: the members of an Alertmanager cluster
/// send their copies 15 s apart (`--cluster.peer-timeout`), a retry follows within seconds, and
/// an unchanged group repeats no sooner than its `group_interval` (5 min by default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);

impl Hook {
    /// From validated settings (exactly one target; a 64-hex-digit hash, a signing secret or
    /// both).
    pub fn from_settings(settings: &HookSettings) -> Option<Self> {
        let target = match (&settings.channel, &settings.user, &settings.token) {
            (Some(channel), None, None) => HookTarget::Channel(Address::parse(channel)),
            (None, Some(user), None) => HookTarget::User(Address::parse(user)),
            (None, None, Some(token)) => HookTarget::Token(token.clone()),
            _ => return None,
        };
        let signing = match &settings.signing_secret {
            Some(secret) => Some(Signing::new(
                secret.clone(),
                settings.signature_header.as_deref(),
                settings.signature_timestamp_header.as_deref(),
            )?),
            None => None,
        };
        if settings.secret_hash.is_none() && signing.is_none() {
            return None;
        }
        Some(Self {
            target,
            secret_hash: settings.secret_hash.clone(),
            signing,
            format: settings.format,
            template: settings.template.clone(),
            markup: settings.markup,
            duplicate_window: settings
                .duplicate_window_secs
                .map_or(DUPLICATE_WINDOW, Duration::from_secs),
        })
    }

    /// Whether the request's secret lets it in (before its body is read): the hook's secret,
    /// compared in constant time on the hashes; a signed hook without one takes requests at its
    /// bare URL (the bearer token then is not its business) that carry a signature, and checks
    /// it once the body is read.
    fn admits(&self, secret: Secret<'_>, headers: &header::HeaderMap) -> Option<Admission> {
        let presented = match (&self.secret_hash, secret) {
            (None, Secret::Header(_)) => {
                return self
                    .signing
                    .as_ref()
                    .is_some_and(|s| s.is_presented(headers))
                    .then_some(Admission::SignatureToCheck);
            }
            (None, Secret::Path(_)) | (Some(_), Secret::Header(None)) => return None,
            (Some(_), Secret::Path(presented) | Secret::Header(Some(presented))) => presented,
        };
        self.has_secret(presented).then_some(Admission::Secret)
    }

    /// Whether `presented` is the hook's secret: compared in constant time on the hashes.
    fn has_secret(&self, presented: &str) -> bool {
        self.secret_hash.as_ref().is_some_and(|hash| {
            let expected = hash.expose_secret().to_ascii_lowercase();
            hash_key(presented)
                .as_bytes()
                .ct_eq(expected.as_bytes())
                .into()
        })
    }
}

/// The secret a request presents, and where.
#[derive(Clone, Copy)]
pub(super) enum Secret<'a> {
    /// `/hooks/{name}/{secret}`.
    Path(&'a str),
    /// `/hooks/{name}`, with `Authorization: Bearer <secret>` (or Basic, [`header_secret`]) or
    /// without it.
    Header(Option<&'a str>),
}

/// The configured hooks by name.
pub type Hooks = BTreeMap<String, Hook>;

/// Requests signed over a timestamp that this replica took in the last
/// [`REPLAYABLE_FOR_MS`](super::hook_signature::REPLAYABLE_FOR_MS): (hook, MAC) → the delivery
/// they made. A captured copy sent again while its timestamp is still accepted is answered as
/// that delivery's duplicate, whatever the copy added (an `Idempotency-Key`) and however short
/// the hook's duplicate window is.
pub type Replays = moka::future::Cache<(String, String), String>;

pub fn replays() -> Replays {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_millis(
            super::hook_signature::REPLAYABLE_FOR_MS as u64,
        ))
        .build()
}

/// What a non-Slack sender gets back.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ok": true, "format": "alertmanager", "delivery_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10"}))]
pub struct HookReceipt {
    ok: bool,
    /// How the message was written: the format the body was read as, or `generic` when the
    /// hook's template wrote it.
    format: &'static str,
    /// The stored delivery (`GET /api/v1/deliveries/{id}` with a read key).
    delivery_id: String,
    /// Discord-style `?wait=true`, once posted: the Chat post's id (the first, when the
    /// message was split), as a string like Discord's message ids; absent when DSM names no
    /// post (an incoming webhook's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// `true` when this event was handed over before (the same `Idempotency-Key` and text,
    /// `webhook-id` or forge delivery id, or a second copy of an Alertmanager or Grafana
    /// notification within the hook's `duplicate_window_secs`): nothing new is stored and
    /// `delivery_id` is the first copy's. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    /// Discord-style `?wait=true`, once posted with a post id: the rest of a Discord message
    /// object, so Discord clients that read the answer as one (discord.py's `wait=True`) take it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(inline, value_type = DiscordMessage)]
    discord: Option<DiscordMessage>,
}

/// The fields of a Discord message object besides its `id`, as Discord answers an
/// execute-webhook call with `?wait=true`. Chat has no mentions, embeds, attachments, pins or
/// edits to report here: those are empty, and `author` stands for the hook.
#[derive(Serialize, ToSchema)]
pub struct DiscordMessage {
    /// `0`, Discord's default message type.
    #[serde(rename = "type")]
    #[schema(required = false)]
    kind: u8,
    /// The text of the (first) post, as Chat shows it.
    #[schema(required = false)]
    content: String,
    /// The Chat channel the post went to, as a string like Discord's ids; `"0"` when the
    /// gateway does not know it (a user target, or a named channel not looked up on this
    /// replica lately): Discord clients read it as a number and fail without it.
    #[schema(required = false)]
    channel_id: String,
    /// When the message was posted (RFC 3339, UTC).
    #[schema(required = false)]
    timestamp: String,
    /// Always `null`.
    #[schema(required = false)]
    edited_timestamp: Option<String>,
    /// The hook, as a Discord webhook's author: `id` `"0"`, `username` the hook's name.
    #[schema(required = false)]
    author: DiscordAuthor,
    /// Always `"0"`.
    #[schema(required = false)]
    webhook_id: &'static str,
    #[schema(required = false)]
    tts: bool,
    #[schema(required = false)]
    mention_everyone: bool,
    #[schema(required = false)]
    pinned: bool,
    #[schema(required = false)]
    flags: u32,
    #[schema(value_type = Vec<Object>, required = false)]
    mentions: [(); 0],
    #[schema(value_type = Vec<String>, required = false)]
    mention_roles: [(); 0],
    #[schema(value_type = Vec<Object>, required = false)]
    attachments: [(); 0],
    #[schema(value_type = Vec<Object>, required = false)]
    embeds: [(); 0],
    #[schema(value_type = Vec<Object>, required = false)]
    components: [(); 0],
}

/// A Discord message's `author`, for a message a webhook posted.
#[derive(Serialize, ToSchema)]
pub struct DiscordAuthor {
    id: &'static str,
    username: String,
    discriminator: &'static str,
    avatar: Option<String>,
    bot: bool,
}

impl DiscordMessage {
    fn posted(hook: &str, content: String, channel_id: Option<ChannelId>, at_ms: i64) -> Self {
        Self {
            kind: 0,
            content,
            channel_id: channel_id.map_or_else(|| "0".to_owned(), |id| id.to_string()),
            timestamp: crate::domain::rfc3339_ms(at_ms),
            edited_timestamp: None,
            author: DiscordAuthor {
                id: "0",
                username: hook.to_owned(),
                discriminator: "0000",
                avatar: None,
                bot: true,
            },
            webhook_id: "0",
            tts: false,
            mention_everyone: false,
            pinned: false,
            flags: 0,
            mentions: [],
            mention_roles: [],
            attachments: [],
            embeds: [],
            components: [],
        }
    }
}

/// What a non-Slack sender gets back for an event the hook leaves unposted on purpose (a
/// forge's repeat of a release, CI still in progress): nothing is stored.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ok": true, "posted": false, "reason": "a workflow run is posted once it has completed"}))]
pub struct HookNotPosted {
    ok: bool,
    /// Always `false`.
    posted: bool,
    /// Why the event is not posted.
    reason: &'static str,
}

/// How a hook request ended, answered in the sender's dialect.
enum Outcome {
    /// Committed to the outbox. `format` is the sender's dialect, `rendered` how the message
    /// was written (they differ under a template).
    Accepted {
        format: Format,
        rendered: Format,
        delivery_id: String,
        /// The event was handed over before; `delivery_id` is the first copy's.
        duplicate: bool,
    },
    /// An event the format does not post (GitHub's repeats of a release, CI in progress).
    NotPosted {
        format: Format,
        reason: &'static str,
    },
    /// Nothing stored, and the sender told why.
    Declined(Declined),
}

/// Why a hook stored nothing.
enum Declined {
    /// Wrong name or secret: nothing posted.
    NoService,
    BadBody {
        format: Option<Format>,
        error: FormatError,
    },
    TooLarge,
    /// The body did not arrive within `server.body_timeout_ms`.
    TimedOut,
    /// The hook's target name matches nothing, or DSM refused for good.
    Dsm {
        format: Format,
        slack_code: &'static str,
        error: ApiError,
    },
    /// The message could not be stored: the sender should retry.
    Unavailable {
        format: Format,
        error: ApiError,
    },
}

impl From<Declined> for Outcome {
    fn from(declined: Declined) -> Self {
        Self::Declined(declined)
    }
}

impl Outcome {
    /// The `answer` label of `synochat_hook_requests_total`.
    fn answer(&self) -> &'static str {
        match self {
            Self::Accepted {
                duplicate: true, ..
            } => "duplicate",
            Self::Accepted { .. } => "accepted",
            Self::NotPosted { .. } => "not_posted",
            Self::Declined(Declined::NoService) => "unauthorized",
            Self::Declined(Declined::BadBody { .. } | Declined::TooLarge | Declined::TimedOut) => {
                "bad_request"
            }
            Self::Declined(Declined::Dsm { .. }) => "refused",
            Self::Declined(Declined::Unavailable { .. }) => "unavailable",
        }
    }
}

impl Declined {
    /// As the problem document every route answers with; `hook_format` is the hook's own
    /// (Google Chat's adds its `error` member).
    fn problem(self, hook_format: Option<Format>) -> ApiError {
        match self {
            Self::NoService => in_senders_words(
                ApiError::not_found("no hook by that name, or not with that secret"),
                hook_format,
            ),
            Self::TooLarge => ApiError::new(
                ProblemCode::PayloadTooLarge,
                format!("a hook's body may hold at most {MAX_HOOK_BODY} bytes"),
            ),
            Self::TimedOut => crate::body_deadline::timeout_problem(),
            Self::BadBody { format, error } => in_senders_words(
                ApiError::invalid(format!("{}: {error}", slack_code(&error))),
                format,
            ),
            Self::Dsm { format, error, .. } => in_senders_words(error, Some(format)),
            // Asked to retry, whatever the failure's own hint was.
            Self::Unavailable { format, error } => {
                in_senders_words(error, Some(format)).with_retry_after(UNAVAILABLE_RETRY_SECS)
            }
        }
    }
}

/// How long a sender is asked to wait when its hook cannot store a message for now.
const UNAVAILABLE_RETRY_SECS: u64 = 30;

/// Slack's word for a body it cannot post.
fn slack_code(error: &FormatError) -> &'static str {
    match error {
        FormatError::NoText => "no_text",
        FormatError::InvalidPayload(_) | FormatError::NotPosted(_) => "invalid_payload",
    }
}

/// A sender's payload as JSON. Also accepted, for the senders that send them: a form with
/// `payload=<json>` (Slack's legacy form) and `text/plain` (posted as it is). Only JSON is
/// described here because client generators cannot model a text body.
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)] // documentation only: the body is read by `handle` in whichever form it came
pub struct HookPayload(serde_json::Value);

/// `/hooks/{name}`
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookPath {
    /// The hook's configured name
    name: String,
}

/// `/hooks/{name}/{secret}`
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookSecretPath {
    /// The hook's configured name
    name: String,
    /// The hook's secret
    secret: String,
}

/// Discord's `wait` flag, for the hook routes that take a body.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: read from the query by `asks_to_wait`
pub struct HookWait {
    /// Discord-style senders: `true` (or `True`, `1`) answers once the message is posted, with
    /// the post's `id` (waiting up to 5 s).
    wait: Option<String>,
}

/// The answers of both hook routes, documented once: text for Slack-style senders, a receipt or
/// a problem for the others.
pub struct HookAnswers;

impl utoipa::IntoResponses for HookAnswers {
    fn responses() -> BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        use utoipa::openapi::{
            ContentBuilder, Ref, ResponseBuilder, ResponsesBuilder, header::HeaderBuilder,
        };
        use utoipa::{PartialSchema, ToSchema};
        let text = |example: Option<&str>| {
            ContentBuilder::new()
                .schema(Some(String::schema()))
                .example(example.map(Into::into))
                .build()
        };
        let json = |schema: &str| {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build()
        };
        let problem = || json(&crate::api::error::Problem::name());
        // A repeat within `duplicate_window_secs` gets the first answer again, marked.
        let replayed = || {
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some("`true` when this is the first answer to the same body, sent again within the hook's `duplicate_window_secs`"))
                .build()
        };
        let location = |description: &str| {
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some(description))
                .build()
        };
        ResponsesBuilder::new()
            .response("200", ResponseBuilder::new()
                .description("Slack-style senders: `ok`; Microsoft Teams senders (a MessageCard or Adaptive Cards): `1`, as Teams' connector answered. The message is stored in the outbox and will be posted (split when long, retried while the NAS is down). Discord-style senders that ask `?wait=true` (`true`, `True` or `1`): the receipt, once the message is posted with the post's `id` (they wait up to 5 s; without an `id` if it is still in the outbox then). If the delivery fails or is cancelled within the wait, the answer is the delivery's last problem with its status (any of 400, 403, 404, 413, 422, 429, 501, 502, 503, 504), or 409 for a cancelled delivery that never failed. Gotify senders (`<hook URL>/message`): the receipt, once the message is stored (Gotify answers 200, and Apprise's `gotify://` takes nothing else); Google Chat senders (cards, or a `thread`): the receipt, as Google Chat answers 200. Other senders, for an event the hook does not post (a forge's repeat of a release, CI still in progress): `posted: false` and why; nothing is stored")
                .header("Idempotent-Replayed", replayed())
                .header("Location", location("`/api/v1/deliveries/{delivery_id}`, where a message was stored (`ok`, `1` and the receipt; not for an event the hook does not post)"))
                .content("text/plain", text(Some("ok")))
                .content("application/json", ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Schema::OneOf(utoipa::openapi::schema::OneOfBuilder::new()
                        .item(Ref::from_schema_name(HookReceipt::name()))
                        .item(Ref::from_schema_name(HookNotPosted::name()))
                        .build())))
                    .build()))
            .response("204", ResponseBuilder::new()
                .description("Discord-style senders (as Discord answers them): the message is stored in the outbox and will be posted")
                .header("Idempotent-Replayed", replayed())
                .header("Location", location("`/api/v1/deliveries/{delivery_id}`")))
            .response("202", ResponseBuilder::new()
                .description("Other senders: the message is stored in the outbox and will be posted; the receipt names the delivery")
                .header("Idempotent-Replayed", replayed())
                .header("Location", location("`/api/v1/deliveries/{delivery_id}`"))
                .content("application/json", json(&HookReceipt::name())))
            .response("400", ResponseBuilder::new()
                .description("`invalid_payload` or `no_text` (text/plain for Slack-style senders, else a problem); for Slack-style senders also `user_not_found`")
                .content("text/plain", text(Some("invalid_payload")))
                .content("application/problem+json", problem()))
            .response("403", ResponseBuilder::new()
                .description("Slack-style senders: `action_prohibited`. DSM refused the gateway's account the channel or user list needed to resolve the hook's named target. Other senders get that as a problem (`upstream_permission_denied`). Discord-style senders that asked `?wait=true`: the delivery's problem when DSM refused the message")
                .content("text/plain", text(Some("action_prohibited")))
                .content("application/problem+json", problem()))
            .response("404", ResponseBuilder::new()
                .description("`no_service`: no hook with this name and secret (text/plain unless the hook's `format` is set to a format other than `slack` or `mattermost`, then a problem; these are answered before the body is read; an unknown hook name is always text/plain `no_service`); for Slack-style senders also `channel_not_found`")
                .content("text/plain", text(Some("no_service")))
                .content("application/problem+json", problem()))
            .response("408", ResponseBuilder::new()
                .description("The body did not arrive within `server.body_timeout_ms`: `request_timeout` (text/plain unless the hook's `format` is set to a format other than `slack` or `mattermost`, then a problem; these are answered before the body is read; an unknown hook name is always text/plain `no_service`)")
                .content("text/plain", text(Some("request_timeout")))
                .content("application/problem+json", problem()))
            .response("409", ResponseBuilder::new()
                .description("Discord-style senders that asked `?wait=true`: the delivery was cancelled before it was posted, and no attempt had failed (else the answer is that attempt's problem)")
                .content("application/problem+json", problem()))
            .response("413", ResponseBuilder::new()
                .description("The body is over 5 MiB: `payload_too_large` (text/plain unless the hook's `format` is set to a format other than `slack` or `mattermost`, then a problem; these are answered before the body is read; an unknown hook name is always text/plain `no_service`)")
                .content("text/plain", text(Some("payload_too_large")))
                .content("application/problem+json", problem()))
            .response("415", ResponseBuilder::new()
                .description("The body is compressed (`Content-Encoding`); send it uncompressed (`unsupported_media_type`, a problem for every sender: it is refused before the hook is looked up)")
                .content("application/problem+json", problem()))
            .response("422", ResponseBuilder::new()
                .description("Other senders: the hook's target name matches no channel or user, or several (`unprocessable`). Slack-style senders get Slack's own statuses instead: `404 channel_not_found`, `400 user_not_found`")
                .content("text/plain", text(Some("channel_not_found")))
                .content("application/problem+json", problem()))
            .response("429", ResponseBuilder::new()
                .description("Discord-style senders that asked `?wait=true`: the delivery was cancelled after DSM rate-limited an attempt (the delivery's last problem, `upstream_rate_limited`)")
                .content("application/problem+json", problem()))
            .response("501", ResponseBuilder::new()
                .description("Discord-style senders that asked `?wait=true`: the delivery failed for good because the NAS does not offer the API it needs (the delivery's problem, `upstream_api_unsupported`)")
                .content("application/problem+json", problem()))
            .response("502", ResponseBuilder::new()
                .description("Discord-style senders that asked `?wait=true`: the delivery failed for good on DSM's side (the delivery's problem)")
                .content("application/problem+json", problem()))
            .response("503", ResponseBuilder::new()
                .description("The message could not be stored, or 16 hook bodies were already being read (`hooks_busy`; 16 of requests a secret let in, 16 of requests a signature header let in, at most 2 of those per client address); retry later (`Retry-After: 30`). Text/plain `temporarily_unavailable` for Slack-style senders, else a problem; `hooks_busy` is answered before the body is read, so it is text/plain unless the hook's `format` is set to a format other than `slack` or `mattermost`")
                .content("text/plain", text(None))
                .content("application/problem+json", problem()))
            .response("504", ResponseBuilder::new()
                .description("Discord-style senders that asked `?wait=true`: the delivery expired before it was posted (`delivery_expired`)")
                .content("application/problem+json", problem()))
            .build()
            .into()
    }
}

/// One documented operation for one method and path: utoipa wants a function for each (and a
/// unique operation id), so each is this thin call of the handler for its kind of secret.
macro_rules! hook_operation {
    ($(#[doc = $doc:literal])* $method:ident $path:literal, $name:ident -> $handler:ident($path_type:ty), utoipa($($args:tt)*)) => {
        $(#[doc = $doc])*
        #[utoipa::path(tag = "hooks", $($args)*, responses(HookAnswers))]
        #[$method($path)]
        pub async fn $name(
            path: web::Path<$path_type>,
            req: HttpRequest,
            payload: web::Payload,
            state: State,
            chat: Dsm,
            outbox: Deliveries,
        ) -> HttpResponse {
            $handler(path, req, payload, state, chat, outbox).await
        }
    };
}

hook_operation! {
    /// Post to a hook (secret in the path)
    ///
    /// For tools that only take a URL: Slack- and Mattermost-compatible senders (Alertmanager
    /// `slack_configs`, Grafana's Slack contact point, Uptime Kuma, Gitea, Sonarr, shoutrrr),
    /// Alertmanager `webhook_configs`, Grafana webhooks, Discord webhooks, Microsoft Teams
    /// webhooks, Sonarr/Radarr and GitHub/Gitea webhooks, any JSON with the hook's template, or plain text. The format is
    /// detected from the body unless the hook sets `format`. Slack-style bodies are answered as
    /// Slack does: `200 ok`, `400 invalid_payload`, `400 no_text`, `404 no_service`
    /// (text/plain); Discord-style ones as Discord does (`204`, or with `?wait=true` `200` and
    /// the receipt, with the post's `id` once it is posted, waiting up to 5 s); other formats get
    /// `202` and a small JSON receipt. With `?wait=true`, if the delivery fails or is cancelled
    /// within the wait, the answer is the delivery's last problem with its status (any of 400,
    /// 403, 404, 413, 422, 429, 501, 502, 503, 504), or 409 for a cancelled delivery that never
    /// failed. A wrong name or secret is `404 no_service` and posts nothing. The message is
    /// committed to the durable outbox before the answer, so the NAS being down, busy or
    /// rate-limiting still gets `ok`: the post follows once, in order, when the NAS can take it
    /// (a target *name* too is looked up when the message is sent). Microsoft Teams senders (a
    /// connector's MessageCard, or Adaptive Cards) get what Teams' connector answered, `200`
    /// with the body `1`; Google Chat senders (cards, or a `thread`) `200` and the receipt. Only a
    /// store that cannot be written, or too many hook bodies at once,
    /// is a 503, never a 4xx. An event delivered
    /// again (the same `X-GitHub-Delivery`, `X-Gitea-Delivery`, `webhook-id` or
    /// `Idempotency-Key`; a copy of an Alertmanager or Grafana notification within the hook's
    /// `duplicate_window_secs`) gets the first answer with `Idempotent-Replayed: true` and is
    /// not posted again.
    post "/{name}/{secret}", hook_with_path_secret -> by_path_secret(HookSecretPath), utoipa(params(HookSecretPath, HookWait), request_body = HookPayload)
}

hook_operation! {
    /// Put to a hook (secret in the path)
    ///
    /// The same as `POST /hooks/{name}/{secret}`, for senders set to PUT (Sonarr, Radarr).
    put "/{name}/{secret}", put_hook_with_path_secret -> by_path_secret(HookSecretPath), utoipa(params(HookSecretPath, HookWait), request_body = HookPayload)
}

hook_operation! {
    /// Call a hook with GET (secret in the path)
    ///
    /// For senders set to GET (Uptime Kuma, Gitea): the query string is the body. Its fields are
    /// read as a JSON object (a field holding a JSON object or array as that: Uptime Kuma's
    /// `heartbeat` and `monitor`), or a `payload` field as the whole JSON body; then as
    /// `POST /hooks/{name}/{secret}`. A GET without a query posts nothing and is answered as an
    /// event the hook does not post (`200` with `posted: false`; `ok` for a Slack-style hook,
    /// `204` for a Discord one): Discord's senders (Uptime Kuma) read a webhook's URL so
    /// before they post.
    get "/{name}/{secret}", get_hook_with_path_secret -> by_path_secret(HookSecretPath), utoipa(params(HookSecretPath))
}

hook_operation! {
    /// Post to a hook (secret as a bearer token)
    ///
    /// The same as `POST /hooks/{name}/{secret}`, for senders that can set
    /// `Authorization: Bearer <secret>` (Alertmanager `http_config`, Grafana, Uptime Kuma), so the
    /// secret stays out of URLs and proxy logs. A hook with a `signing_secret` checks the
    /// sender's HMAC-SHA256 signature of the body (`X-Hub-Signature-256`, `X-Gitea-Signature`,
    /// `X-Forgejo-Signature`, `X-Gogs-Signature`, `X-Grafana-Alerting-Signature`; with a
    /// `whsec_` secret, Standard Webhooks' `webhook-signature`), and needs no
    /// bearer token when it has no other secret; a signature that does not verify is
    /// `404 no_service`. Basic credentials whose password is the secret do as well as a bearer
    /// token (senders that offer only `basic_auth`). Mattermost's URL shape, the secret alone as
    /// `{name}` (`/hooks/<secret>`, all that shoutrrr's `mattermost://` can send), reaches the
    /// hook whose secret it is, unless another hook shares that secret.
    post "/{name}", hook_with_bearer_secret -> by_bearer_secret(HookPath), utoipa(params(HookPath, HookWait), request_body = HookPayload)
}

hook_operation! {
    /// Put to a hook (secret as a bearer token)
    ///
    /// The same as `POST /hooks/{name}`, for senders set to PUT.
    put "/{name}", put_hook_with_bearer_secret -> by_bearer_secret(HookPath), utoipa(params(HookPath, HookWait), request_body = HookPayload)
}

hook_operation! {
    /// Call a hook with GET (secret as a bearer token)
    ///
    /// The same as `GET /hooks/{name}/{secret}`, with `Authorization: Bearer <secret>`.
    get "/{name}", get_hook_with_bearer_secret -> by_bearer_secret(HookPath), utoipa(params(HookPath))
}

async fn by_path_secret(
    path: web::Path<HookSecretPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    let HookSecretPath { name, secret } = path.into_inner();
    handle(
        &name,
        Secret::Path(&secret),
        &req,
        payload,
        (&state, &chat, &outbox),
    )
    .await
}

async fn by_bearer_secret(
    path: web::Path<HookPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    let services = (&state, &chat, &**outbox);
    let presented = header_secret(req.headers());
    if presented.is_none()
        && !state.hooks.contains_key(&path.name)
        && let Some(name) = hook_of_secret(&state.hooks, &path.name)
    {
        // `/hooks/<secret>`: Mattermost's URL shape, the only one shoutrrr's `mattermost://`
        // (Watchtower) can send.
        return handle(name, Secret::Path(&path.name), &req, payload, services).await;
    }
    handle(
        &path.name,
        Secret::Header(presented.as_deref()),
        &req,
        payload,
        services,
    )
    .await
}

/// A GET without a query string: a check of the hook, not a message.
fn is_probe(req: &HttpRequest) -> bool {
    req.method() == actix_web::http::Method::GET
        && form_urlencoded::parse(req.query_string().as_bytes())
            .all(|(key, _)| DISCORD_URL_PARAMETERS.contains(&key.as_ref()))
}

/// Query parameters of a Discord webhook URL, not of a message: Uptime Kuma's Discord provider
/// checks `…?thread_id=…` with a GET before it posts.
const DISCORD_URL_PARAMETERS: [&str; 2] = ["thread_id", "wait"];

/// The secret in a request's `Authorization`: a bearer token, or the password of Basic
/// credentials (the user name when the password is empty), for senders that offer only basic
/// auth (Alertmanager's and Grafana's `basic_auth`); or GitLab's `X-Gitlab-Token`, or a Gotify
/// sender's `X-Gotify-Key`.
pub(super) fn header_secret(headers: &header::HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(token) = crate::auth::bearer_token(headers) {
        return Some(token.into());
    }
    // GitLab sends a webhook's "Secret token" as it is, in a header of its own; Gotify's
    // senders their application token.
    if let Some(token) = ["x-gitlab-token", "x-gotify-key"].iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }) {
        return Some(token.into());
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(crate::auth::credentials(headers, "Basic ")?)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    let secret = if password.is_empty() { user } else { password };
    (!secret.is_empty()).then(|| secret.to_owned().into())
}

/// Whether every request to the hook must carry the sender's signature: such a hook is not
/// reachable by its secret alone (`/webapi/entry.cgi`, whose senders sign nothing).
pub(super) fn requires_signature(hooks: &Hooks, name: &str) -> bool {
    hooks.get(name).is_some_and(|hook| hook.signing.is_some())
}

/// The hook whose secret is `presented` (`/hooks/<secret>`), if exactly one hook has it (two
/// hooks sharing a secret cannot be told apart by it). Every hook is asked, so the time taken
/// does not tell which matched.
pub(super) fn hook_of_secret<'h>(hooks: &'h Hooks, presented: &str) -> Option<&'h str> {
    match hooks_of_secret(hooks, presented).as_slice() {
        [name] => Some(name),
        _ => None,
    }
}

/// The names of the hooks whose secret `presented` is.
pub(super) fn hooks_of_secret<'h>(hooks: &'h Hooks, presented: &str) -> Vec<&'h str> {
    hooks
        .iter()
        .filter(|(_, hook)| hook.has_secret(presented))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// What the hook `name` made of a request, counted in `synochat_hook_requests_total`, with the
/// hook when it is configured: for a dialect to word.
async fn outcome_of<'s>(
    name: &str,
    secret: Secret<'_>,
    req: &HttpRequest,
    payload: web::Payload,
    services: (&'s State, &Dsm, &Outbox),
) -> (Option<&'s Hook>, Outcome) {
    let state = services.0;
    let hook = state.hooks.get(name);
    let admitted = hook.and_then(|hook| Some((hook, hook.admits(secret, req.headers())?)));
    // Another tool's API (ntfy, Matrix, Telegram): its GET is a message, never a check.
    let foreign = actix_web::HttpMessage::extensions(req).contains::<super::ntfy::NtfyCall>()
        || actix_web::HttpMessage::extensions(req).contains::<SenderApi>();
    let outcome = match admitted {
        // A GET with no query (or only a Discord URL's) carries no message: Discord's senders
        // (Uptime Kuma) read a webhook's URL this way before posting, and a browser or a
        // monitor checks it so.
        Some((hook, _)) if is_probe(req) && !foreign => Outcome::NotPosted {
            format: format_of(hook, req).unwrap_or(Format::Generic),
            reason: "a GET without a message is a check of the hook; nothing is posted",
        },
        Some((hook, admission)) => receive((name, hook, admission), req, payload, services).await,
        None => Declined::NoService.into(),
    };
    // Counted for configured hooks only: a request's made-up name never becomes a label.
    if let (Some(_), Some(metrics)) = (hook, req.app_data::<web::Data<crate::metrics::Metrics>>()) {
        metrics.hook_request(name, outcome.answer());
    }
    match &outcome {
        Outcome::Declined(Declined::Dsm { error, .. }) => {
            tracing::warn!(hook = name, %error, "hook message refused");
        }
        Outcome::Declined(Declined::Unavailable { error, .. }) => {
            tracing::warn!(hook = name, %error, "hook message not accepted for now (the store, or too many bodies at once): the sender is asked to retry");
        }
        _ => {}
    }
    (hook, outcome)
}

/// A hook's request answered in its sender's dialect: Slack's strings, Discord's `204`, Teams'
/// `1`, else a receipt or a problem document.
pub(super) async fn handle(
    name: &str,
    secret: Secret<'_>,
    req: &HttpRequest,
    payload: web::Payload,
    services: (&State, &Dsm, &Outbox),
) -> HttpResponse {
    let (hook, outcome) = outcome_of(name, secret, req, payload, services).await;
    let hook_format = hook.and_then(|h| format_of(h, req));
    let slack_style = |format: Option<Format>| {
        format
            .or(hook_format)
            .is_none_or(Format::answers_like_slack)
    };
    match outcome {
        // Slack's senders accept only `200 ok`, and Teams' the connector's `200 1` (some check
        // the body); the message is stored, not yet posted, and can be followed at its
        // `Location` as with the other formats.
        Outcome::Accepted {
            format,
            duplicate,
            delivery_id,
            ..
        } if format.plain_success().is_some() => replayed(HttpResponse::Ok(), duplicate)
            .insert_header((
                header::LOCATION,
                public_url_for(req, &format!("/api/v1/deliveries/{delivery_id}")),
            ))
            .content_type("text/plain; charset=utf-8")
            .body(format.plain_success().unwrap_or_default()),
        Outcome::Accepted {
            format,
            rendered,
            delivery_id,
            duplicate,
        } => {
            let location = public_url_for(req, &format!("/api/v1/deliveries/{delivery_id}"));
            // Discord answers an execute-webhook call 204, or with `?wait=true` 200 and a body.
            let discord = format == Format::Discord;
            if discord && !asks_to_wait(req) {
                return replayed(HttpResponse::NoContent(), duplicate)
                    .insert_header((header::LOCATION, location))
                    .finish();
            }
            // `?wait=true`: Discord answers once the message exists, with its id.
            let waited = if discord {
                match waited_for(name, services.2, &delivery_id).await {
                    Ok(waited) => waited,
                    Err(error) => {
                        let mut response = error.error_response();
                        if let Ok(value) = header::HeaderValue::from_str(&location) {
                            response.headers_mut().insert(header::LOCATION, value);
                        }
                        return response;
                    }
                }
            } else {
                Waited::NotYet
            };
            let (answer, posted) = match waited {
                Waited::Posted(posted) => (HttpResponse::Ok(), posted),
                // Discord's senders know only 200 and 204 as success (see `DISCORD_WAIT`),
                // Gotify's senders (Apprise's) 200 alone, and Google Chat's answers 200 (Jenkins
                // takes nothing else; Argo CD needs a JSON body without `error`).
                Waited::NotYet
                    if discord
                        || format == Format::GoogleChat
                        || actix_web::HttpMessage::extensions(req)
                            .contains::<crate::front_door::GotifyCall>() =>
                {
                    (HttpResponse::Ok(), None)
                }
                Waited::NotYet => (HttpResponse::Accepted(), None),
            };
            replayed(answer, duplicate)
                .insert_header((header::LOCATION, location))
                .json(HookReceipt {
                    ok: true,
                    format: rendered.as_str(),
                    delivery_id,
                    id: posted.as_ref().map(|(id, _)| id.to_string()),
                    duplicate,
                    discord: posted.map(|(_, message)| *message),
                })
        }
        // Nothing stored, on purpose, and said so: a success, in the sender's dialect.
        Outcome::NotPosted { format, reason } => {
            tracing::debug!(hook = name, reason, "hook event not posted");
            if let Some(success) = format.plain_success() {
                plain(StatusCode::OK, success)
            } else if format == Format::Discord {
                HttpResponse::NoContent().finish()
            } else {
                not_posted(reason)
            }
        }
        // Slack's senders get Slack's strings; the others a problem document.
        Outcome::Declined(declined) => match declined {
            Declined::NoService if slack_style(None) => plain(StatusCode::NOT_FOUND, "no_service"),
            Declined::TooLarge if slack_style(None) => {
                plain(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            Declined::TimedOut if slack_style(None) => {
                let mut response = plain(StatusCode::REQUEST_TIMEOUT, "request_timeout");
                response
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
                response
            }
            Declined::BadBody { format, error } if slack_style(format) => {
                plain(StatusCode::BAD_REQUEST, slack_code(&error))
            }
            // The statuses Slack gives these bodies (senders-delivery-events A.1).
            Declined::Dsm {
                format, slack_code, ..
            } if slack_style(Some(format)) => {
                let status = match slack_code {
                    "channel_not_found" => StatusCode::NOT_FOUND,
                    "action_prohibited" => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                plain(status, slack_code)
            }
            Declined::Unavailable { format, .. } if slack_style(Some(format)) => {
                let mut response =
                    plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(UNAVAILABLE_RETRY_SECS),
                );
                response
            }
            declined => declined.problem(hook_format).error_response(),
        },
    }
}

/// How long a Discord-style `?wait=true` call waits for its message to be posted. Then it is
/// answered `200` with the receipt alone: stored is success for every hook sender, and Discord
/// clients take any other success status as a failure (Apprise accepts only 200 and 204), so a
/// retry would post the message twice. Short, for clients with short timeouts.
const DISCORD_WAIT: Duration = Duration::from_secs(5);

/// What a Discord-style `?wait=true` call found after waiting.
enum Waited {
    /// Delivered; the id of its (first) post, when DSM named one (incoming webhooks do not),
    /// and the rest of the Discord message object then.
    Posted(Option<(i64, Box<DiscordMessage>)>),
    /// Still in the outbox after [`DISCORD_WAIT`] (or its state could not be read).
    NotYet,
}

/// Waits up to [`DISCORD_WAIT`] for the delivery; `Err` is why it failed or was cancelled.
async fn waited_for(hook: &str, outbox: &Outbox, delivery_id: &str) -> Result<Waited, ApiError> {
    let row = match outbox.settled(delivery_id, DISCORD_WAIT).await {
        Ok(Some(row)) => row,
        // It is stored; what became of it can be read at its `Location`.
        Ok(None) | Err(_) => return Ok(Waited::NotYet),
    };
    match row.state {
        DeliveryState::Delivered => {
            let Some((chunk, post_id)) = row
                .posts
                .iter()
                .find_map(|&(chunk, post)| Some((chunk, post?)))
            else {
                return Ok(Waited::Posted(None));
            };
            let content = usize::try_from(chunk)
                .ok()
                .and_then(|chunk| row.chunks.get(chunk))
                .cloned()
                .unwrap_or_default();
            let channel_id = outbox.posted_channel(&row).await;
            let at_ms = row.finished_at.unwrap_or(row.updated_at);
            let message = DiscordMessage::posted(hook, content, channel_id, at_ms);
            Ok(Waited::Posted(Some((post_id, Box::new(message)))))
        }
        DeliveryState::Failed | DeliveryState::Cancelled => Err(row
            .last_error
            .as_deref()
            .and_then(ApiError::from_stored)
            .unwrap_or_else(|| {
                ApiError::new(
                    ProblemCode::Conflict,
                    format!("delivery {delivery_id} was {}", row.state),
                )
            })),
        DeliveryState::Queued | DeliveryState::Sending => Ok(Waited::NotYet),
    }
}

/// Whether the query says `wait=true` (Discord's "answer with the message" flag). Discord
/// reads `true`, `True` and `1` as true in a query (discord.py sends `wait=1`).
fn asks_to_wait(req: &HttpRequest) -> bool {
    form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(key, value)| key == "wait" && (value.eq_ignore_ascii_case("true") || value == "1"))
}

/// A `multipart/form-data` body: its JSON field (Discord's `payload_json`, Uptime Kuma's
/// form-data `data`, a `payload`), else its text fields as an object (Discord also takes
/// `content`, `username`, ... as fields beside the files; Apprise's `form://`); and the names
/// of its files, which are not posted.
pub(super) async fn multipart_body(
    req: &HttpRequest,
    body: web::Bytes,
) -> Result<(web::Bytes, Vec<String>), FormatError> {
    let (fields, files) = multipart_fields(req, body).await?;
    let json_field = fields
        .iter()
        .position(|(name, _)| matches!(name.as_str(), "payload_json" | "data" | "payload"));
    if let Some(at) = json_field {
        return Ok((
            fields
                .into_iter()
                .nth(at)
                .map(|(_, v)| v)
                .unwrap_or_default(),
            files,
        ));
    }
    let texts = fields
        .into_iter()
        .map(|(name, value)| match String::from_utf8(value.to_vec()) {
            Ok(text) => Ok((name, text)),
            Err(_) => Err(multipart_invalid(&format_args!(
                "field `{name}` is not UTF-8 text"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json =
        serde_json::to_vec(&formats::fields_object(texts)).map_err(|e| multipart_invalid(&e))?;
    Ok((json.into(), files))
}

/// A `multipart/form-data` body's fields that are not files, in order, and the names of its
/// files.
pub(super) async fn multipart_fields(
    req: &HttpRequest,
    body: web::Bytes,
) -> Result<(Vec<(String, web::Bytes)>, Vec<String>), FormatError> {
    use futures_util::StreamExt;
    let whole =
        futures_util::stream::once(async move { Ok::<_, actix_web::error::PayloadError>(body) });
    let mut form = actix_multipart::Multipart::new(req.headers(), whole);
    let (mut fields, mut files) = (Vec::new(), Vec::new());
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| multipart_invalid(&e))?;
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(str::to_owned);
        let mut value = bytes::BytesMut::new();
        while let Some(chunk) = field.next().await {
            value.extend_from_slice(&chunk.map_err(|e| multipart_invalid(&e))?);
        }
        match file_name {
            Some(file_name) => files.push(file_name),
            None => fields.push((name, value.freeze())),
        }
    }
    Ok((fields, files))
}

fn multipart_invalid(error: &dyn std::fmt::Display) -> FormatError {
    FormatError::InvalidPayload(format!("multipart body: {error}"))
}

/// Marks a request that came through another chat tool's API (Matrix's, Telegram's): the hook
/// reads it as that tool's message, whatever its own format or template, and the tool's module
/// words the answer.
#[derive(Clone, Debug)]
pub(super) enum SenderApi {
    /// Matrix's send of a room message; `txn` is its transaction id, which names the message:
    /// the same id again is the same message (a client's retry), as on a homeserver.
    Matrix { txn: Option<String> },
    /// Telegram's Bot API `sendMessage`.
    Telegram,
}

impl SenderApi {
    fn format(&self) -> Format {
        match self {
            Self::Matrix { .. } => Format::Matrix,
            Self::Telegram => Format::Telegram,
        }
    }

    /// The message the body carries, as the tool's API takes it.
    fn payload(
        &self,
        req: &HttpRequest,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<formats::Payload, FormatError> {
        match self {
            // The Bot API takes its parameters as JSON, a form, or in the query.
            Self::Telegram => {
                let payload = if body.is_empty() {
                    formats::query_payload(req.query_string())?
                } else if formats::media_type_is(content_type, "application/x-www-form-urlencoded")
                    && !formats::looks_like_an_object(body)
                {
                    // The Bot API's form is its parameters, a text among them or not: strings,
                    // but `reply_markup`, which is JSON.
                    let (markup, strings): (Vec<_>, Vec<_>) = form_urlencoded::parse(body)
                        .map(|(key, value)| (key.into_owned(), value.into_owned()))
                        .partition(|(key, _)| key == "reply_markup");
                    let mut parameters = formats::fields_object(markup);
                    if let Some(object) = parameters.as_object_mut() {
                        object.extend(
                            strings
                                .into_iter()
                                .map(|(key, value)| (key, serde_json::Value::String(value))),
                        );
                    }
                    formats::Payload::Json(parameters)
                } else {
                    formats::parse_body(content_type, body)?
                };
                match payload {
                    formats::Payload::Json(value @ serde_json::Value::Object(_)) => {
                        Ok(formats::Payload::Json(value))
                    }
                    _ => Err(FormatError::InvalidPayload(
                        "the parameters must be a JSON object, a form or a query".into(),
                    )),
                }
            }
            // The content of a Matrix event is a JSON object, whatever the Content-Type says.
            Self::Matrix { .. } => match serde_json::from_slice(body) {
                Ok(value @ serde_json::Value::Object(_)) => Ok(formats::Payload::Json(value)),
                Ok(_) => Err(FormatError::InvalidPayload(
                    "the event content must be a JSON object".into(),
                )),
                Err(e) => Err(FormatError::InvalidPayload(format!(
                    "the event content is not JSON: {e}"
                ))),
            },
        }
    }

    /// The event the request names, if it names one: a Matrix transaction with this text. A
    /// transaction id sent again with another text is another message (a client that reuses
    /// its ids, as shoutrrr's `shoutrrr-1`), posted, never dropped as a repeat.
    fn event(&self, text: &str) -> Option<EventKey> {
        match self {
            Self::Matrix { txn: Some(txn) } => Some(EventKey {
                key: format!("matrix:{}:{}", short_digest(txn), short_digest(text)),
                since_ms: Some(unix_ms().saturating_sub(MATRIX_TXN_KEPT.as_millis() as i64)),
            }),
            Self::Matrix { txn: None } | Self::Telegram => None,
        }
    }
}

/// How long a Matrix transaction id names its message: as long as a homeserver keeps it
/// (Synapse: about half an hour), long enough for a client's retries, not for a day's repeats
/// of one event (Gitea's ids are its bodies' hashes).
const MATRIX_TXN_KEPT: Duration = Duration::from_secs(3600);

/// The first 16 bytes of `text`'s SHA-256, in hex: a key of bounded length for any text.
fn short_digest(text: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    hex::encode(&digest[..16])
}

/// A hook's request, for the routes that word its answer in another tool's terms (ntfy's,
/// Matrix's, Telegram's), which their clients parse.
pub(super) async fn answered(
    name: &str,
    secret: Secret<'_>,
    req: &HttpRequest,
    payload: web::Payload,
    services: (&State, &Dsm, &Outbox),
) -> Answered {
    let (hook, outcome) = outcome_of(name, secret, req, payload, services).await;
    match outcome {
        Outcome::Accepted {
            delivery_id,
            duplicate,
            ..
        } => {
            let location = public_url_for(req, &format!("/api/v1/deliveries/{delivery_id}"));
            let mut kept = Vec::with_capacity(2);
            kept.extend(
                header::HeaderValue::from_str(&location)
                    .ok()
                    .map(|value| (header::LOCATION, value)),
            );
            if duplicate {
                kept.push((
                    IDEMPOTENT_REPLAYED,
                    header::HeaderValue::from_static("true"),
                ));
            }
            Answered::Stored(Stored { delivery_id, kept })
        }
        Outcome::NotPosted { reason, .. } => {
            tracing::debug!(hook = name, reason, "hook event not posted");
            Answered::NotPosted(reason)
        }
        Outcome::Declined(declined) => {
            let problem = declined.problem(hook.and_then(|h| format_of(h, req)));
            let status = problem.status_code();
            // The gateway's own failure (500, 502, 504) stays a problem document, as documented
            // for every route.
            if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE {
                Answered::Refused(Refusal::from(problem))
            } else {
                Answered::Failed(problem.error_response())
            }
        }
    }
}

/// `200` and `{"ok": true, "posted": false, "reason"}`: an event the hook does not post.
pub(super) fn not_posted(reason: &'static str) -> HttpResponse {
    HttpResponse::Ok().json(HookNotPosted {
        ok: true,
        posted: false,
        reason,
    })
}

/// A hook's outcome, for the routes that word it in another tool's terms.
pub(super) enum Answered {
    /// Stored in the outbox.
    Stored(Stored),
    /// An event the hook does not post, on purpose (the reason): a success.
    NotPosted(&'static str),
    /// Refused for a reason the tool's clients read: a 4xx, or a 503 to retry.
    Refused(Refusal),
    /// The gateway's own failure: a problem document, as on every route.
    Failed(HttpResponse),
}

/// A message the hook stored.
pub(super) struct Stored {
    pub delivery_id: String,
    /// `Location` (the delivery) and, for a message handed over before, `Idempotent-Replayed`.
    kept: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl Stored {
    /// 200 with `body`, and the hook's `Location` and `Idempotent-Replayed`.
    pub fn answer(&self, body: impl Serialize) -> HttpResponse {
        let mut answer = HttpResponse::Ok();
        for header in &self.kept {
            answer.insert_header(header.clone());
        }
        answer.json(body)
    }
}

/// A refusal, for the routes that word it in another tool's terms.
pub(super) struct Refusal {
    /// The problem's status and headers (`Retry-After`, `WWW-Authenticate`, the connection's
    /// close).
    head: HttpResponse<()>,
    /// What was wrong, with the request's id.
    pub error: String,
}

impl From<ApiError> for Refusal {
    fn from(problem: ApiError) -> Self {
        let document = problem.problem();
        let detail = match document.detail.is_empty() {
            true => document.title.to_owned(),
            false => document.detail,
        };
        let error = match document.request_id {
            Some(id) => format!("{detail} (request {id})"),
            None => detail,
        };
        Self {
            head: problem.error_response().drop_body(),
            error,
        }
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        self.head.status()
    }

    /// The answer's `Retry-After` in seconds, if it had one.
    pub fn retry_after(&self) -> Option<u64> {
        self.head
            .headers()
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// The same status and headers (`Retry-After`, `X-Request-Id`), with `body` as JSON.
    pub fn answer(&self, body: serde_json::Value) -> HttpResponse {
        let mut answer = HttpResponse::build(self.head.status());
        for (name, value) in self.head.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                answer.append_header((name.clone(), value.clone()));
            }
        }
        let mut answer = answer.json(body);
        if self.head.head().connection_type() == ConnectionType::Close {
            answer.head_mut().set_connection_type(ConnectionType::Close);
        }
        answer
    }
}

/// The format a hook reads a request in and answers it in: its configured one, else Google
/// Chat's when the URL carries Google Chat's threading parameters. Argo CD, GitLab and Jenkins
/// add `messageReplyOption` (and `threadKey`) to the URL they were given when they thread, and
/// judge the answer by Google's JSON, where their bare `{"text": …}` would read as Slack's and
/// be answered `ok`. A template keeps its hook generic.
fn format_of(hook: &Hook, req: &HttpRequest) -> Option<Format> {
    hook.format.or_else(|| {
        let threads = || {
            form_urlencoded::parse(req.query_string().as_bytes())
                .any(|(key, _)| key == "messageReplyOption")
        };
        (hook.template.is_none() && threads()).then_some(Format::GoogleChat)
    })
}

/// A refusal as the sender's tool words one where that matters: Google Chat's `error` member.
fn in_senders_words(error: ApiError, format: Option<Format>) -> ApiError {
    match format {
        Some(Format::GoogleChat) => error.for_google_chat(),
        _ => error,
    }
}

/// Marks the answer to a repeated event as the API's idempotent replays are marked.
fn replayed(mut answer: HttpResponseBuilder, duplicate: bool) -> HttpResponseBuilder {
    if duplicate {
        answer.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    answer
}

/// Headers in which senders name the event a request delivers, the same on every redelivery
/// of it: Standard Webhooks' `webhook-id` (Svix's `svix-id`) and the forges' delivery GUIDs
/// (Gitea and Forgejo send GitHub's header too, with the same value). A caller's
/// `Idempotency-Key` is read apart.
const EVENT_ID_HEADERS: [&str; 6] = [
    "webhook-id",
    "svix-id",
    "x-github-delivery",
    "x-gitea-delivery",
    "x-forgejo-delivery",
    "x-gogs-delivery",
];

/// What identifies the event this request delivers, if anything does: a header naming it
/// (kept for as long as its delivery is), else the content of an Alertmanager or Grafana
/// notification (for the hook's duplicate window). A malformed `Idempotency-Key` is the
/// caller's mistake and refused; a sender header that is not a plain id is ignored.
fn event_of(
    req: &HttpRequest,
    content_key: Option<String>,
    text: &MessageText,
    hook: &Hook,
) -> Result<Option<EventKey>, FormatError> {
    let named = |key: String| EventKey {
        key: format!("delivery:{key}"),
        since_ms: None,
    };
    // A Standard Webhooks id is signed with the body (and verified by now): it names the
    // event, and an `Idempotency-Key` added to a captured request cannot make it new again.
    if hook.signing.as_ref().is_some_and(Signing::is_standard)
        && let Some(id) = super::hook_signature::standard_header(req.headers(), "id")
    {
        return Ok(Some(named(id.trim().to_owned())));
    }
    if let Some(keyed) = keyed_event(req, text.as_str())? {
        return Ok(Some(keyed));
    }
    let sender_id = EVENT_ID_HEADERS.iter().find_map(|name| {
        let value = req.headers().get(*name)?.to_str().ok()?.trim();
        let plain = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        plain.then(|| value.to_owned())
    });
    if let Some(id) = sender_id {
        return Ok(Some(named(id)));
    }
    // After a sender's own id for the event (Gitea's Matrix webhook sends its delivery's).
    if let Some(event) = actix_web::HttpMessage::extensions(req)
        .get::<SenderApi>()
        .and_then(|api| api.event(text.as_str()))
    {
        return Ok(Some(event));
    }
    // A body signed over a timestamp that is no notification: its MAC names it (a captured
    // copy sent again is the same request; see also [`Replays`]).
    if content_key.is_none()
        && let Some(mac) = hook
            .signing
            .as_ref()
            .and_then(|signing| signing.replay_name(req.headers()))
    {
        return Ok(Some(named(format!("signed:{mac}"))));
    }
    if hook.duplicate_window.is_zero() {
        return Ok(None);
    }
    let since = unix_ms().saturating_sub(hook.duplicate_window.as_millis() as i64);
    Ok(content_key.map(|key| EventKey {
        key,
        since_ms: Some(since),
    }))
}

/// The event a caller's `Idempotency-Key` names, if it sent one (a malformed one is refused).
/// The key names its request: the same key with another message is another message, posted,
/// never dropped as a repeat.
pub(super) fn keyed_event(req: &HttpRequest, text: &str) -> Result<Option<EventKey>, FormatError> {
    let Some(key) = super::idempotency::parse_key(req.headers())
        .map_err(|e| FormatError::InvalidPayload(e.to_string()))?
    else {
        return Ok(None);
    };
    Ok(Some(EventKey {
        key: format!("key:{key}:{}", short_digest(text)),
        since_ms: None,
    }))
}

/// The `payload` field of a form body, or of a GET's query: the JSON a forge sent that way.
fn carried_payload(req: &HttpRequest, body: &[u8]) -> Option<String> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fields = if req.method() == actix_web::http::Method::GET {
        req.query_string().as_bytes()
    } else if formats::media_type_is(content_type, "application/x-www-form-urlencoded") {
        body
    } else {
        return None;
    };
    form_urlencoded::parse(fields)
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| value.into_owned())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// Why a sender's body was not read.
pub(super) enum Unread {
    /// Over the limit, as declared or as it came.
    TooLarge,
    /// Every slot for bodies admitted so is taken ([`BODY_PERMIT_WAIT`] passed).
    Busy,
    /// It did not arrive within `server.body_timeout_ms`.
    TimedOut,
    /// The read failed.
    Failed,
}

impl Unread {
    /// The problem for a body that `hooks_busy` turned away.
    pub(super) fn busy() -> ApiError {
        ApiError::new(
            ProblemCode::HooksBusy,
            "as many hook bodies as the gateway reads at once are being read already; retry \
             shortly",
        )
    }
}

/// A sender's body, at most `limit` bytes, read under a permit of the kind `admission` earned;
/// the permit is held until the body has been turned into a message. A request without a body
/// (`Content-Length: 0`, or a GET or HEAD that declares none) takes no permit: a probe is not
/// turned away because slow bodies hold every slot.
pub(super) async fn read_body<'s>(
    bodies: &'s HookBodies,
    req: &HttpRequest,
    payload: web::Payload,
    (admission, limit): (Admission, usize),
) -> Result<(web::Bytes, Option<BodyPermit<'s>>), Unread> {
    let headers = req.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Unread::TooLarge);
    }
    let bodiless = declared == Some(0)
        || (declared.is_none()
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            ));
    if bodiless {
        return Ok((web::Bytes::new(), None));
    }
    let permit = bodies.permit(admission, req).await.ok_or(Unread::Busy)?;
    // The outer `Err` is the limit, the inner one a read that failed (or ran out of time).
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok((body, Some(permit))),
        Ok(Err(_)) if crate::body_deadline::timed_out(req) => Err(Unread::TimedOut),
        Ok(Err(_)) => Err(Unread::Failed),
        Err(_) => Err(Unread::TooLarge),
    }
}

async fn receive(
    (name, hook, admission): (&str, &Hook, Admission),
    req: &HttpRequest,
    payload: web::Payload,
    (state, chat, outbox): (&State, &Dsm, &Outbox),
) -> Outcome {
    let (body, permit) =
        match read_body(&state.hook_bodies, req, payload, (admission, MAX_HOOK_BODY)).await {
            Ok(read) => read,
            Err(Unread::TooLarge) => return Declined::TooLarge.into(),
            Err(Unread::TimedOut) => return Declined::TimedOut.into(),
            Err(Unread::Busy) => {
                return Declined::Unavailable {
                    format: format_of(hook, req).unwrap_or(Format::Slack),
                    error: Unread::busy(),
                }
                .into();
            }
            Err(Unread::Failed) => {
                return Declined::BadBody {
                    format: format_of(hook, req),
                    error: FormatError::InvalidPayload("the body could not be read".into()),
                }
                .into();
            }
        };
    if let Some(signing) = &hook.signing {
        // Gitea and Forgejo sign the JSON they send, also as a form's or a query's `payload`.
        let carried = carried_payload(req, &body);
        let mut texts: Vec<&[u8]> = vec![&body];
        texts.extend(carried.as_deref().map(str::as_bytes));
        if let Err(why) = signing.verify(req.headers(), &texts, unix_ms() / 1000) {
            tracing::warn!(hook = name, %why, "hook request refused: its signature did not verify");
            return Declined::NoService.into();
        }
    }
    let mut content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let ntfy = actix_web::HttpMessage::extensions(req)
        .get::<super::ntfy::NtfyCall>()
        .copied();
    if let Some(call) = ntfy {
        match call.payload(name, req, &body) {
            Ok(Some(payload)) => {
                return Box::pin(finish_receive(
                    (name, hook),
                    req,
                    (Source::Parsed(Ok(payload)), Vec::new(), Some(Format::Ntfy)),
                    permit,
                    (state, chat, outbox),
                ))
                .await;
            }
            Ok(None) => return Declined::NoService.into(),
            Err(error) => {
                return Declined::BadBody {
                    format: Some(Format::Ntfy),
                    error,
                }
                .into();
            }
        }
    }
    let api = actix_web::HttpMessage::extensions(req)
        .get::<SenderApi>()
        .cloned();
    if let Some(api) = api {
        let format = api.format();
        // A form with files (`curl -F`) as an object of its fields; the files are not passed on.
        let (body, content_type) = if formats::media_type_is(content_type, "multipart/form-data") {
            match multipart_body(req, body).await {
                Ok((json, _)) => (json, Some("application/json")),
                Err(error) => {
                    return Declined::BadBody {
                        format: Some(format),
                        error,
                    }
                    .into();
                }
            }
        } else {
            (body, content_type)
        };
        return match api.payload(req, content_type, &body) {
            Ok(payload) => {
                Box::pin(finish_receive(
                    (name, hook),
                    req,
                    (Source::Parsed(Ok(payload)), Vec::new(), Some(format)),
                    permit,
                    (state, chat, outbox),
                ))
                .await
            }
            Err(error) => Declined::BadBody {
                format: Some(format),
                error,
            }
            .into(),
        };
    }
    let mut files = Vec::new();
    let body = if formats::media_type_is(content_type, "multipart/form-data") {
        content_type = Some("application/json");
        multipart_body(req, body).await.map(|(json, named)| {
            files = named;
            json
        })
    } else {
        Ok(body)
    };
    let source = if req.method() == actix_web::http::Method::GET {
        Source::Parsed(formats::query_payload(req.query_string()))
    } else {
        Source::Body {
            content_type: content_type.map(str::to_owned),
            body,
        }
    };
    finish_receive(
        (name, hook),
        req,
        (source, files, format_of(hook, req)),
        permit,
        (state, chat, outbox),
    )
    .await
}

/// A hook's body as it came (parsed in [`read_message`]), or already parsed (a query, ntfy's
/// fields).
enum Source {
    Body {
        content_type: Option<String>,
        body: Result<web::Bytes, FormatError>,
    },
    Parsed(Result<formats::Payload, FormatError>),
}

/// Bodies larger than this are parsed and rendered on the blocking pool, not on the worker's
/// thread: a body of megabytes takes it for many milliseconds, and every request of that
/// worker (health checks, cached lists) would wait.
const READ_INLINE_MAX: usize = 64 * 1024;

/// What a hook's body says: the format its shape is, what identifies its event, the message.
struct Read {
    shape: Option<Format>,
    content_key: Option<String>,
    rendered: Result<formats::Rendered, FormatError>,
}

/// Parses and renders a hook's body: pure work, done where [`READ_INLINE_MAX`] says.
fn read_message(
    source: Source,
    files: &[String],
    format: Option<Format>,
    template: Option<&str>,
    markup: formats::Markup,
) -> Read {
    let parsed = match source {
        Source::Body { content_type, body } => {
            body.and_then(|body| formats::parse_body(content_type.as_deref(), &body))
        }
        Source::Parsed(parsed) => parsed,
    };
    // The answer speaks the sender's dialect (Grafana's Slack contact point takes only `ok`,
    // Discord clients only 200 or 204): the hook's format, or the shape of the body.
    let shape = parsed.as_ref().ok().map(|p| formats::detect(p, false));
    let content_key = parsed.as_ref().ok().and_then(formats::event_key);
    let strip_markup =
        markup == formats::Markup::Plain && parsed.as_ref().is_ok_and(formats::may_carry_markup);
    let rendered = formats::with_files(
        parsed.and_then(|p| formats::render(&p, format, template)),
        files,
        format.unwrap_or(Format::Discord),
    )
    .map(|rendered| match strip_markup {
        true => formats::Rendered {
            text: formats::plain_markup(&rendered.text),
            ..rendered
        },
        false => rendered,
    });
    Read {
        shape,
        content_key,
        rendered,
    }
}

/// A hook's body (and the names of the files it carried), rendered in `format` (or the format
/// its shape says), checked and handed to the outbox.
async fn finish_receive(
    (name, hook): (&str, &Hook),
    req: &HttpRequest,
    (source, files, format): (Source, Vec<String>, Option<Format>),
    permit: Option<BodyPermit<'_>>,
    (state, chat, outbox): (&State, &Dsm, &Outbox),
) -> Outcome {
    // ntfy's calls are read as ntfy's, whatever the hook's format or template.
    let template = hook.template.clone().filter(|_| format == hook.format);
    let large =
        matches!(&source, Source::Body { body: Ok(body), .. } if body.len() > READ_INLINE_MAX);
    let markup = hook.markup;
    let Read {
        shape,
        content_key,
        rendered,
    } = if large {
        let read = actix_web::rt::task::spawn_blocking(move || {
            read_message(source, &files, format, template.as_deref(), markup)
        });
        match read.await {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(hook = name, %error, "reading a hook's body failed");
                Read {
                    shape: None,
                    content_key: None,
                    rendered: Err(FormatError::InvalidPayload(
                        "the body could not be read".into(),
                    )),
                }
            }
        }
    } else {
        read_message(source, &files, format, template.as_deref(), markup)
    };
    // A template, or a generic or text rendering, decides how the message reads, not who sent
    // it.
    let dialect = |rendered: Format| match rendered {
        Format::Generic | Format::Text => shape.unwrap_or(rendered),
        format => format,
    };
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(FormatError::NotPosted(reason)) => {
            return Outcome::NotPosted {
                format: format.or(shape).unwrap_or(Format::Generic),
                reason,
            };
        }
        Err(error) => {
            // Answered in the sender's dialect: a Slack-style string only to a Slack-style body.
            return Declined::BadBody {
                format: format.or(shape),
                error,
            }
            .into();
        }
    };
    let text = match MessageText::parse(rendered.text) {
        Ok(text) => text,
        Err(refusal) => {
            return Declined::BadBody {
                format: Some(dialect(rendered.format)),
                error: match refusal {
                    TextRefusal::Blank => FormatError::NoText,
                    TextRefusal::Nul => FormatError::InvalidPayload(format!("the text {refusal}")),
                },
            }
            .into();
        }
    };
    let event = match event_of(req, content_key, &text, hook) {
        Ok(event) => event,
        Err(error) => {
            return Declined::BadBody {
                format: Some(dialect(rendered.format)),
                error,
            }
            .into();
        }
    };
    // Read and rendered: the body is gone, and the wait for DSM or the store is not held
    // against other senders.
    drop(permit);
    let replay = hook
        .signing
        .as_ref()
        .and_then(|signing| signing.replay_name(req.headers()))
        .map(|mac| (name.to_owned(), mac));
    if let Some(replay) = &replay
        && let Some(delivery_id) = state.hook_replays.get(replay).await
    {
        tracing::info!(
            hook = name,
            delivery_id,
            "a signed hook request sent again: answered with its delivery, not posted again"
        );
        return Outcome::Accepted {
            format: dialect(rendered.format),
            rendered: rendered.format,
            delivery_id,
            duplicate: true,
        };
    }
    match dispatch(
        state,
        chat,
        outbox,
        (name, &hook.target, event.as_ref()),
        &text,
        None,
    )
    .await
    {
        Ok((delivery_id, duplicate)) => {
            if duplicate {
                // The key says what kind of repeat it was (`delivery:`, `key:`, `alerts:`),
                // never the secret; the ids in it are the sender's own.
                let kind = event.as_ref().map_or("", |e| {
                    e.key
                        .split_once(':')
                        .map_or(e.key.as_str(), |(kind, _)| kind)
                });
                tracing::info!(
                    hook = name,
                    delivery_id,
                    repeat_of = kind,
                    "hook event handed over before: answered with its delivery, not posted again"
                );
            }
            if let Some(replay) = replay {
                state.hook_replays.insert(replay, delivery_id.clone()).await;
            }
            Outcome::Accepted {
                format: dialect(rendered.format),
                rendered: rendered.format,
                delivery_id,
                duplicate,
            }
        }
        Err(DispatchError::Transient(error)) => Declined::Unavailable {
            format: dialect(rendered.format),
            error,
        }
        .into(),
        Err(DispatchError::Permanent { slack_code, error }) => Declined::Dsm {
            format: dialect(rendered.format),
            slack_code,
            error,
        }
        .into(),
    }
}

/// Why [`dispatch`] did not post.
pub enum DispatchError {
    /// Worth retrying later: the NAS unreachable or slow, busy, rate-limiting, a login backing
    /// off.
    Transient(ApiError),
    /// Retrying will not help: an unknown target name, a refusal by DSM.
    Permanent {
        slack_code: &'static str,
        error: ApiError,
    },
}

impl From<ApiError> for DispatchError {
    fn from(error: ApiError) -> Self {
        let status = error.code().status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Self::Transient(error)
        } else {
            Self::Permanent {
                slack_code: "action_prohibited",
                error,
            }
        }
    }
}

/// The one place a hook's message is handed on: its target is resolved (names through the
/// cached lists) and the message is committed to the durable outbox, which posts it (split
/// when long, paced, retried while the NAS is down) exactly once. With the `event` it reports,
/// a second copy of that event is not stored again. Answers the delivery's id, and whether it
/// is the first copy's.
pub async fn dispatch(
    state: &State,
    chat: &Dsm,
    outbox: &Outbox,
    (hook_name, target, event): (&str, &HookTarget, Option<&EventKey>),
    text: &MessageText,
    file_url: Option<&HttpUrl>,
) -> Result<(String, bool), DispatchError> {
    if file_url.is_some() && !matches!(target, HookTarget::Token(_)) {
        // Only an incoming webhook takes a file by URL; the outbox keeps no files.
        return Err(DispatchError::Permanent {
            slack_code: "invalid_payload",
            error: ApiError::new(
                ProblemCode::Unprocessable,
                format!(
                    "a file_url is posted only through an incoming webhook, and this hook's target is \
                     {target}: give the hook a `token` target, or leave the file out"
                ),
            ),
        });
    }
    let job = match target {
        HookTarget::Token(name) => {
            state.integration_token(name, TokenKind::Webhook)?;
            Job::Webhook {
                name: name.clone(),
                file_url: file_url.map(ToString::to_string),
            }
        }
        // A name is checked now, so one that matches nothing is refused before anything is
        // stored; but the job keeps the name and the worker looks it up when it sends. So a
        // message is accepted while the NAS cannot be asked (nothing in memory yet), and all of
        // a hook's messages share one target, hence one order.
        HookTarget::Channel(Address::Name(name)) => {
            accept_unverified(
                checked_soon(resolve_channel(state, chat, &Address::Name(name.clone()))).await,
                hook_name,
            )?;
            Job::ChannelNamed {
                channel: name.clone(),
            }
        }
        HookTarget::User(Address::Name(name)) => {
            accept_unverified(
                checked_soon(resolve_user(state, chat, &Address::Name(name.clone()))).await,
                hook_name,
            )?;
            Job::UserNamed {
                username: name.clone(),
            }
        }
        HookTarget::Channel(address) => Job::Channel {
            channel_id: resolve_channel(state, chat, address).await?,
            thread_id: None,
        },
        // The worker opens the conversation; DSM's refusal of a DM to the gateway's own
        // account is stored on the delivery as a permanent failure.
        HookTarget::User(address) => Job::User {
            user_id: resolve_user(state, chat, address).await?,
        },
    };
    hand_over(outbox, hook_name, &job, text.as_str(), event)
        .await
        .map_err(DispatchError::Transient)
}

/// Commits `job` to the outbox as the hook's (or door's) message: the delivery, and whether
/// `event` was handed over before (then nothing new is stored).
pub(super) async fn hand_over(
    outbox: &Outbox,
    hook_name: &str,
    job: &Job,
    text: &str,
    event: Option<&EventKey>,
) -> Result<(String, bool), ApiError> {
    let caller = callers::hook(hook_name);
    // The sender cannot be asked to shorten its text: what is over the limit is left out, and
    // the last post says so.
    let limits = outbox.part_limits();
    let (parts, left_out) = if text.len() > READ_INLINE_MAX {
        // Off the worker's thread, as the body was read ([`READ_INLINE_MAX`]).
        let owned = text.to_owned();
        actix_web::rt::task::spawn_blocking(move || limits.split_cutting(&owned))
            .await
            .map_err(|error| {
                ApiError::new(
                    ProblemCode::Internal,
                    format!("splitting the message failed: {error}"),
                )
            })?
    } else {
        limits.split_cutting(text)
    };
    if left_out > 0 {
        tracing::warn!(
            hook = hook_name,
            left_out,
            "a message longer than delivery.max_message_parts posts was cut"
        );
    }
    let enqueued = match event {
        Some(event) => outbox.enqueue_event(&caller, job, parts, event).await,
        None => outbox
            .enqueue(&caller, job, parts)
            .await
            .map(|id| (id, false)),
    };
    enqueued.map_err(ApiError::from)
}

/// A channel id as configured, or the one channel whose name matches (exactly, else ignoring
/// case); none or several is a permanent problem, never a guess.
pub async fn resolve_channel(
    state: &State,
    chat: &Dsm,
    address: &Address,
) -> Result<ChannelId, DispatchError> {
    let name = match address {
        Address::Id(id) => {
            return ChannelId::new(*id).map_err(|e| unknown("channel_not_found", e));
        }
        Address::Name(name) => name,
    };
    let channels = state.caches.channel_list(chat).await?;
    let names: Vec<(&str, ChannelId)> = channels
        .items
        .iter()
        .filter(|c| !c.name.is_empty())
        .map(|c| (c.name.as_str(), c.channel_id))
        .collect();
    crate::domain::find_by_name(&names, name)
        .map_err(|reason| unknown("channel_not_found", format!("channel {name:?} {reason}")))
}

/// A user id as configured, or the user with this username (DSM account names ignore case).
pub async fn resolve_user(
    state: &State,
    chat: &Dsm,
    address: &Address,
) -> Result<UserId, DispatchError> {
    let name = match address {
        Address::Id(id) => return UserId::new(*id).map_err(|e| unknown("user_not_found", e)),
        Address::Name(name) => name,
    };
    let users = state.caches.user_list(chat).await?;
    let names: Vec<(&str, UserId)> = users
        .items
        .iter()
        .filter(|u| !u.deleted)
        .map(|u| (u.username.as_str(), u.user_id))
        .collect();
    crate::domain::find_by_name(&names, name)
        .map_err(|reason| unknown("user_not_found", format!("user {name:?} {reason}")))
}

/// A name that could not be checked (the NAS unreachable or busy) is accepted: the worker looks
/// it up when it can, and a name that then matches nothing fails that delivery, visibly.
/// How long a hook's answer waits for its named target to be checked. Senders give up early
/// (Gitea after 5 s, GitHub after 10 s) and some retry, so with a NAS that hangs the message is
/// stored unchecked instead, and its name is looked up when it is sent.
const NAME_CHECK_WAIT: Duration = Duration::from_secs(2);

/// `check`, or a transient failure once [`NAME_CHECK_WAIT`] has passed.
async fn checked_soon<T>(
    check: impl Future<Output = Result<T, DispatchError>>,
) -> Result<T, DispatchError> {
    actix_web::rt::time::timeout(NAME_CHECK_WAIT, check)
        .await
        .unwrap_or_else(|_| {
            Err(DispatchError::Transient(ApiError::from(
                crate::upstream::UpstreamError::Timeout,
            )))
        })
}

fn accept_unverified<T>(
    checked: Result<T, DispatchError>,
    hook_name: &str,
) -> Result<(), DispatchError> {
    match checked {
        Ok(_) => Ok(()),
        Err(DispatchError::Transient(error)) => {
            tracing::info!(hook = hook_name, %error, "hook target name not checked now: it is looked up when the message is sent");
            Ok(())
        }
        Err(permanent) => Err(permanent),
    }
}

fn unknown(slack_code: &'static str, detail: impl std::fmt::Display) -> DispatchError {
    DispatchError::Permanent {
        slack_code,
        error: ApiError::new(ProblemCode::Unprocessable, detail.to_string()),
    }
}

/// At start-up: resolves every named hook target once, so a name that matches nothing is
/// reported before the first alert needs it (a warning only when the NAS cannot be asked yet).
pub async fn check_targets(state: &State, chat: &Dsm) {
    for (name, hook) in &state.hooks {
        let result = match &hook.target {
            HookTarget::Channel(address @ Address::Name(_)) => {
                resolve_channel(state, chat, address).await.map(drop)
            }
            HookTarget::User(address @ Address::Name(_)) => {
                resolve_user(state, chat, address).await.map(drop)
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(DispatchError::Transient(error)) => tracing::warn!(
                hook = %name, hook_target = %hook.target, %error,
                "could not check the hook's target yet (the NAS is not reachable); it is resolved on use"
            ),
            Err(DispatchError::Permanent { error, .. }) => tracing::error!(
                hook = %name, hook_target = %hook.target, %error,
                "the hook's target matches nothing: its messages will be refused until the configuration is fixed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_then_ignoring_case_but_never_ambiguously() {
        let entries = [("ops", 1), ("Dev", 2), ("dev", 3), ("Alerts", 4)];
        assert_eq!(crate::domain::find_by_name(&entries, "ops"), Ok(1));
        assert_eq!(crate::domain::find_by_name(&entries, "dev"), Ok(3));
        assert_eq!(crate::domain::find_by_name(&entries, "alerts"), Ok(4));
        assert!(crate::domain::find_by_name(&entries, "DEV").is_err());
        assert!(crate::domain::find_by_name(&entries, "nope").is_err());
    }

    #[test]
    fn secrets_are_checked_against_the_hash() {
        let hook = Hook {
            target: HookTarget::Token("t".into()),
            secret_hash: Some(SecretString::from(hash_key("s3cret").to_uppercase())),
            signing: None,
            format: None,
            template: None,
            markup: formats::Markup::Raw,
            duplicate_window: DUPLICATE_WINDOW,
        };
        let none = header::HeaderMap::new();
        for presented in [Secret::Path("s3cret"), Secret::Header(Some("s3cret"))] {
            assert_eq!(hook.admits(presented, &none), Some(Admission::Secret));
        }
        for wrong in [
            Secret::Path("s3cre"),
            Secret::Path(""),
            Secret::Header(Some("s3cre")),
            Secret::Header(None),
        ] {
            assert_eq!(hook.admits(wrong, &none), None);
        }
        // A signed hook without a secret: its bare URL, whatever the bearer token, if the
        // request carries a signature (checked once the body is read; without one the body is
        // not read at all); never a secret in the path (there is none to match).
        let signed = Hook {
            secret_hash: None,
            signing: Signing::new(SecretString::from("sixteen chars ok"), None, None),
            ..hook
        };
        let mut signature = header::HeaderMap::new();
        signature.insert(
            header::HeaderName::from_static("x-hub-signature-256"),
            header::HeaderValue::from_static("sha256=00"),
        );
        let to_check = Some(Admission::SignatureToCheck);
        assert_eq!(signed.admits(Secret::Header(None), &signature), to_check);
        assert_eq!(
            signed.admits(Secret::Header(Some("anything")), &signature),
            to_check
        );
        assert_eq!(signed.admits(Secret::Header(None), &none), None);
        assert_eq!(signed.admits(Secret::Path("s3cret"), &signature), None);
    }

    #[test]
    fn targets_are_ids_or_names() {
        assert_eq!(Address::parse("7"), Address::Id(7));
        assert_eq!(Address::parse("ops"), Address::Name("ops".into()));
        assert_eq!(Address::parse("0"), Address::Name("0".into()));
    }
}
