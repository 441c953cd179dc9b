//! What several handler modules share: the input types that validate themselves while they are
//! parsed (so a handler never re-checks them and the OpenAPI document states the same rule),
//! the path parameters, and the list wrapper every `items` answer uses.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use crate::api::cache::CachedList;
use std::sync::Arc;

use super::{Dsm, State};
use crate::api::error::{ApiError, ProblemCode};
use crate::api::idempotency::{InterruptedAttempt, KeyedRequest};
use crate::domain::{
    ChannelId, CronjobId, FileUrlPolicy, HttpUrl, MessageText, PostId, User, UserId,
    parse_whole_number,
};
use crate::upstream::UpstreamError;

/// A whole number that may arrive as a JSON number or as text (path segments and query values
/// are text); `what` describes the expected value in the error.
fn whole<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &dyn fmt::Display,
) -> Result<u64, D::Error> {
    struct Whole<'a>(&'a dyn fmt::Display);

    impl serde::de::Visitor<'_> for Whole<'_> {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(f)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom(format!("must be {}", self.0)))
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<u64, E> {
            self.visit_str(&value.to_string())
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_whole_number(text).ok_or_else(|| E::custom(format!("must be {}", self.0)))
        }
    }

    deserializer.deserialize_any(Whole(what))
}

/// "between LOW and HIGH" for an error message, written only when a message is: a query's
/// `limit` and `offset` are read on every page of posts.
struct Between(u32, u32);

impl fmt::Display for Between {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "between {} and {}", self.0, self.1)
    }
}

/// A Unix time in milliseconds, from 1973-03-03 (`100000000000`) up to 2286-11-20
/// (`9999999999999`). The lower bound is there to catch seconds: a time in seconds stays below
/// it until the year 5138, while every millisecond time Chat has ever stored lies above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = u64, minimum = 100_000_000_000_u64, maximum = 9_999_999_999_999_u64,
    example = 1893456000000_u64)]
pub struct UnixMillis(u64);

impl UnixMillis {
    pub const MIN: u64 = 100_000_000_000;
    pub const MAX: u64 = 9_999_999_999_999;

    pub fn new(value: u64) -> Result<Self, String> {
        if value < Self::MIN {
            Err(format!(
                "must be a Unix time in milliseconds; {value} looks like seconds"
            ))
        } else if value > Self::MAX {
            Err(format!(
                "must be a Unix time in milliseconds up to {}",
                Self::MAX
            ))
        } else {
            Ok(Self(value))
        }
    }

    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self(now.clamp(Self::MIN, Self::MAX))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The time when it is after now; a past time is well formed, but not one a schema can rule
    /// out, so it is a 422 naming `field`.
    pub fn in_future(self, field: &str) -> Result<Self, ApiError> {
        let now = Self::now();
        if self <= now {
            return Err(ApiError::new(
                ProblemCode::Unprocessable,
                format!("{field} must be in the future (now is {})", now.0),
            ));
        }
        Ok(self)
    }
}

impl<'de> Deserialize<'de> for UnixMillis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole(deserializer, &"a Unix time in milliseconds")?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many items a page holds: 1 to `MAX`, `DEFAULT` when the query leaves it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<const DEFAULT: u32, const MAX: u32>(u32);

impl<const DEFAULT: u32, const MAX: u32> Limit<DEFAULT, MAX> {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<const DEFAULT: u32, const MAX: u32> Default for Limit<DEFAULT, MAX> {
    fn default() -> Self {
        Self(DEFAULT)
    }
}

impl<'de, const DEFAULT: u32, const MAX: u32> Deserialize<'de> for Limit<DEFAULT, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let what = Between(1, MAX);
        match whole(deserializer, &what)? {
            value @ 1.. if value <= u64::from(MAX) => Ok(Self(value as u32)),
            _ => Err(serde::de::Error::custom(format!("must be {what}"))),
        }
    }
}

impl<const DEFAULT: u32, const MAX: u32> PartialSchema for Limit<DEFAULT, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int32,
            )))
            .minimum(Some(1))
            .maximum(Some(MAX))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

impl<const DEFAULT: u32, const MAX: u32> ToSchema for Limit<DEFAULT, MAX> {}

/// How many items to skip: 0 up to `i32::MAX` (the document says int32, so larger values are
/// refused rather than clipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offset(u32);

impl Offset {
    pub const MAX: u32 = i32::MAX as u32;

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let what = Between(0, Self::MAX);
        match whole(deserializer, &what)? {
            value if value <= u64::from(Self::MAX) => Ok(Self(value as u32)),
            _ => Err(serde::de::Error::custom(format!("must be {what}"))),
        }
    }
}

impl PartialSchema for Offset {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int32,
            )))
            .minimum(Some(0))
            .maximum(Some(Self::MAX))
            .default(Some(0.into()))
            .into()
    }
}

impl ToSchema for Offset {}

/// `limit` and where a page of posts starts: `offset`, or `before` a post.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// How many posts (1 to 200, default 50).
    #[serde(default)]
    #[param(inline)]
    pub limit: Limit<50, 200>,
    /// How many posts to skip (default 0): of the newest, or of those before `before`.
    #[serde(default)]
    #[param(inline)]
    pub offset: Offset,
    /// Only posts older than this post id: pass the last `post_id` of a page to get the next
    /// one. Works on every NAS, whichever way it pages. A post of another channel is a 404.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 9223372036854775807_i64)]
    pub before: Option<PostId>,
}

/// `/channels/{channel_id}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// Channel id
    pub channel_id: ChannelId,
}

/// `/posts/{post_id}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PostPath {
    /// Post id
    pub post_id: PostId,
}

/// `/users/{user_id}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// User id
    pub user_id: UserId,
}

/// `/integrations/bots/{user_id}` and `/integrations/chatbots/{user_id}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BotUserPath {
    /// The bot's user id
    pub user_id: UserId,
}

/// `/scheduled-posts/{cronjob_id}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CronjobPath {
    /// Scheduled post id
    pub cronjob_id: CronjobId,
}

/// `/integrations/…/{id}`: a webhook or slash command, by its `user_id`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IntegrationPath {
    /// The integration's `user_id`
    pub id: UserId,
}

/// `/bots/{name}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BotPath {
    /// The configured bot name
    pub name: String,
}

/// `/bots/{name}/channels/{channel_id}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BotChannelPath {
    /// The configured bot name
    pub name: String,
    /// Channel id
    pub channel_id: ChannelId,
}

/// `/bots/{name}/posts/{post_id}/…`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BotPostPath {
    /// The configured bot name
    pub name: String,
    /// Post id
    pub post_id: PostId,
}

/// `/inbound/{name}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InboundPath {
    /// The configured inbound name
    pub name: String,
}

/// `/subscriptions/{subscription_id}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SubscriptionPath {
    /// The subscription id
    #[param(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub subscription_id: String,
}

/// `/webhooks/incoming/{name}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The configured webhook name
    pub name: String,
}

/// `/deliveries/{delivery_id}`
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// The id from the 202 answer (a UUID)
    pub delivery_id: DeliveryId,
}

/// A delivery's id: a hyphenated UUID, the only form the gateway hands out (anything else
/// cannot name a delivery).
#[derive(Clone, Debug, PartialEq, Eq, ToSchema)]
#[schema(value_type = String,
    pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
pub struct DeliveryId(String);

impl DeliveryId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DeliveryId {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        // The hyphenated form only, as documented (uuid also parses braced and simple forms).
        Some(raw)
            .filter(|raw| raw.len() == 36)
            .and_then(|raw| uuid::Uuid::parse_str(raw).ok())
            .map(|u| Self(u.to_string()))
            .ok_or_else(|| "delivery_id must be a UUID".to_owned())
    }
}

impl<'de> Deserialize<'de> for DeliveryId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file's bytes, as file downloads answer them.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documentation only: downloads stream DSM's bytes as they came
pub struct FileBytes(Vec<u8>);

/// The documented names of the list answers: an operation naming `Items<T>` as its body would
/// be documented under utoipa's generic name `Items_T`, an alias under `<T>List`.
pub type ChannelList = Items<crate::domain::Channel>;
pub type UserList = Items<crate::domain::User>;
pub type PostList = Items<crate::domain::Post>;
pub type ReminderList = Items<crate::upstream::Reminder>;
pub type ScheduledPostList = Items<crate::upstream::ScheduledPost>;
pub type WebhookList = Items<crate::domain::Webhook>;
pub type ChatbotList = Items<crate::domain::Chatbot>;
pub type ConfiguredWebhookList = Items<super::webhooks::ConfiguredWebhook>;
pub type TokenCheckList = Items<super::token_check::TokenCheck>;
pub type DeliveryList = Items<super::deliveries::Delivery>;

/// A list answer: `{"items": [...]}`. Documented as `<Item>List` (`ChannelList`, `PostList`,
/// ...), so each instance has its own readable name, and with an example built from the item's.
#[derive(Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

impl<T> From<Vec<T>> for Items<T> {
    fn from(items: Vec<T>) -> Self {
        Self { items }
    }
}

impl<T: ToSchema> PartialSchema for Items<T> {
    fn schema() -> RefOr<Schema> {
        let item_example = match T::schema() {
            RefOr::T(Schema::Object(object)) => {
                object.examples.into_iter().next().or(object.example)
            }
            _ => None,
        };
        ObjectBuilder::new()
            .property(
                "items",
                ArrayBuilder::new().items(Ref::from_schema_name(T::name())),
            )
            .required("items")
            .examples(item_example.map(|example| serde_json::json!({ "items": [example] })))
            .into()
    }
}

impl<T: ToSchema> ToSchema for Items<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}List", T::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

/// 204 when DSM did it; Chat's "no such resource" (117) as a 404 naming `what`.
pub fn done(
    result: Result<(), UpstreamError>,
    what: impl fmt::Display,
) -> Result<HttpResponse, ApiError> {
    result.map_err(|e| ApiError::for_resource(e, what))?;
    Ok(HttpResponse::NoContent().finish())
}

/// A cached list's answer: its serialised JSON as cached (or 304 when `If-None-Match` names its
/// `ETag`), or, with a `filter` value, the items `keep` selects (an empty filter value names
/// `field` in a 400).
pub fn cached_list<T: Clone + Serialize>(
    req: &HttpRequest,
    list: &CachedList<T>,
    field: &str,
    filter: Option<&str>,
    keep: impl Fn(&T, &str) -> bool,
) -> Result<HttpResponse, ApiError> {
    let Some(value) = filter else {
        return Ok(list.respond(req));
    };
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    let items: Vec<T> = list
        .items
        .iter()
        .filter(|item| keep(item, value))
        .cloned()
        .collect();
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// One item of a cached list, or `missing`.
pub fn cached_item<T: Clone>(
    list: &CachedList<T>,
    is_it: impl Fn(&T) -> bool,
    missing: impl FnOnce() -> ApiError,
) -> Result<web::Json<T>, ApiError> {
    list.items
        .iter()
        .find(|item| is_it(item))
        .cloned()
        .map(web::Json)
        .ok_or_else(missing)
}

/// Declares a documented pass-through of a DSM `data` object whose shape DSM does not document:
/// a free-form object in the OpenAPI document, with a description and an example.
macro_rules! dsm_object {
    ($description:literal, $name:ident, $example:tt) => {
        #[doc = $description]
        #[derive(serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(serde_json::Map<String, serde_json::Value>);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Object)
                    .description(Some($description))
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(super) use dsm_object;

/// Validated text and file URL; the error names the field. A `file_url` naming an internal
/// host the policy does not allow is a 422.
pub fn outgoing_message(
    text: &str,
    file_url: Option<&str>,
    policy: &FileUrlPolicy,
) -> Result<(MessageText, Option<HttpUrl>), ApiError> {
    let text = MessageText::parse(text.to_owned())
        .map_err(|refusal| ApiError::invalid(format!("text {refusal}")))?;
    let file_url = file_url
        .map(|raw| checked_file_url(raw, policy))
        .transpose()?;
    Ok((text, file_url))
}

/// A `file_url` the NAS may fetch: an absolute http(s) URL (400 otherwise) not naming an
/// internal host the policy does not allow (422).
pub fn checked_file_url(raw: &str, policy: &FileUrlPolicy) -> Result<HttpUrl, ApiError> {
    let url = HttpUrl::parse("file_url", raw).map_err(ApiError::invalid)?;
    policy
        .check(&url)
        .map_err(|detail| ApiError::new(ProblemCode::Unprocessable, detail))?;
    Ok(url)
}

/// The cached user list, reloaded once when `stale` says it lacks someone (users may have been
/// added since it was cached).
async fn users_reloaded_if(
    state: &State,
    chat: &Dsm,
    stale: impl Fn(&[User]) -> bool,
) -> Result<Arc<CachedList<User>>, ApiError> {
    let cached = state.caches.user_list(chat).await?;
    if !stale(&cached.items) {
        return Ok(cached);
    }
    state.caches.users.invalidate();
    state.caches.user_list(chat).await
}

/// The Chat user id of the account the gateway logs in with: the user whose `username` is the
/// configured account name (DSM account names are case-insensitive). The user list is used
/// rather than the channel list because every account is in it, even one in no channel.
pub async fn own_user_id(state: &State, chat: &Dsm) -> Result<UserId, ApiError> {
    let account = state.upstream.account();
    let find = |users: &[User]| {
        users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(account))
            .map(|u| u.user_id)
    };
    let users = users_reloaded_if(state, chat, |users| find(users).is_none()).await?;
    find(&users.items).ok_or_else(|| {
        ApiError::new(
            ProblemCode::UpstreamInvalidResponse,
            format!("the gateway's DSM account {account:?} is not in Chat's user list"),
        )
    })
}

/// Refuses with a 400 naming `field` unless every id is an existing, not deleted Chat user, so
/// that DSM's ambiguous 117 ("no such channel" or "no such user") cannot come back.
pub async fn ensure_users_exist(
    state: &State,
    chat: &Dsm,
    ids: &[UserId],
    field: &str,
) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Ok(());
    }
    let unknown = |users: &[User]| -> Vec<String> {
        ids.iter()
            .filter(|id| !users.iter().any(|u| u.user_id == **id && !u.deleted))
            .map(ToString::to_string)
            .collect()
    };
    let users = users_reloaded_if(state, chat, |users| !unknown(users).is_empty()).await?;
    match unknown(&users.items) {
        missing if missing.is_empty() => Ok(()),
        // Well-formed ids of users that are not there: the request cannot be carried out (422;
        // a 404 would say the addressed resource, e.g. the channel, is missing).
        missing => Err(ApiError::new(
            ProblemCode::Unprocessable,
            format!(
                "{field} names users that do not exist: {}",
                missing.join(", ")
            ),
        )),
    }
}

/// A text message as the outbox would send it, and who handed it over: committed at once with
/// `Prefer: respond-async` ([`Self::accept`]), or taken over when a synchronous send stopped
/// part way and the caller sent an `Idempotency-Key`, a caller that wants each message once:
/// when DSM's answer to a part never came (DSM may have posted it; the outbox looks for that
/// part before sending it again), or when earlier parts were posted and DSM turned the next
/// one away for now (busy, rate limited). The outbox finishes the message and the route
/// answers 202 naming the delivery. Without a key the caller gets the failure.
pub struct Handover<'a> {
    pub req: &'a HttpRequest,
    pub chat: &'a Dsm,
    pub outbox: &'a crate::delivery::Outbox,
    pub caller: Option<&'a str>,
    pub job: crate::delivery::Job,
}

impl Handover<'_> {
    /// The request's Idempotency-Key, as its delivery is keyed: what a synchronous send notes
    /// its posts under ([`crate::upstream::DsmClient::note_posted_directly`]).
    pub fn key(&self) -> Option<String> {
        delivery_key(self.req).map(|k| k.key)
    }

    /// A synchronous send begun at `since` that stopped part way. With an Idempotency-Key, and
    /// an unknown outcome or parts posted before DSM asked to wait (a retry would post those
    /// again), the outbox takes the message over and the answer is 202; else the failure,
    /// naming the parts posted. `posts` reads what a part created: (recipient, post id), the
    /// recipient 0 in a channel.
    pub async fn finish_stopped<T>(
        self,
        stopped: crate::chunking::Stopped<T, ApiError>,
        since: i64,
        posts: impl Fn(&T) -> Vec<(u64, u64)>,
    ) -> Result<HttpResponse, ApiError> {
        let Handover {
            req,
            chat,
            outbox,
            caller,
            job,
        } = self;
        let partly_posted = !stopped.done.is_empty() && stopped.error.asks_to_wait();
        let unknown = stopped.error.outcome_unknown();
        if (unknown || partly_posted)
            && req
                .headers()
                .contains_key(super::idempotency::IDEMPOTENCY_KEY)
        {
            let done = stopped
                .done
                .iter()
                .cloned()
                .zip(stopped.sent.iter().map(|part| {
                    posts(part)
                        .into_iter()
                        .map(|(recipient, post)| (recipient as i64, post as i64))
                        .collect()
                }))
                .collect();
            let caller = caller.unwrap_or(crate::store::deliveries::callers::ANONYMOUS);
            match outbox
                .take_over(
                    caller,
                    &job,
                    done,
                    stopped.left.clone(),
                    // Sent by this process: its window is placed on the NAS's clock.
                    (unknown.then_some(since), chat.nas_clock_offset_ms()),
                    delivery_key(req).as_ref(),
                )
                .await
            {
                Ok(id) => {
                    tracing::warn!(delivery = %id, error = %stopped.error, "a synchronous send stopped part way; the outbox finishes the message");
                    return Ok(super::deliveries::accepted(req, id, false));
                }
                // The hand-over may have been committed all the same (the store's deadline
                // drops a commit in flight), and the unanswered part may have been posted: the
                // key is kept as an interrupted attempt's (503 `store_unavailable`), so a retry
                // looks for both. Released, as after a bare upstream failure, the retry would
                // send the message again.
                Err(error @ crate::store::StoreError::Unavailable(_)) => {
                    tracing::warn!(%error, cause = %stopped.error, "an unanswered synchronous send could not be handed to the outbox");
                    let detail = format!(
                        "the send stopped ({}) and the rest could not be handed to the outbox: {error}",
                        stopped.error.detail()
                    );
                    return Err(super::told_parts_posted(
                        crate::chunking::Stopped {
                            error: ApiError::new(ProblemCode::StoreUnavailable, detail)
                                .with_retry_after(crate::problem::STORE_RETRY_SECS),
                            ..stopped
                        },
                        |part| posts(part).into_iter().map(|(_, post)| post).collect(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "an unanswered synchronous send could not be handed to the outbox");
                }
            }
        }
        Err(super::told_parts_posted(stopped, |part| {
            posts(part).into_iter().map(|(_, post)| post).collect()
        }))
    }

    /// With `Prefer: respond-async`, commits `text` and answers 202. Without it, `None` (send
    /// now) unless the outbox's earlier messages to the target are not delivered within
    /// `delivery.queue_wait_ms`: then `text` is committed behind them (202), so it cannot
    /// overtake them. A retry of a cut-off attempt is resumed first, asked or not (see
    /// [`Self::resume_interrupted`]).
    pub async fn accept_if_asked_or_queued(
        &self,
        text: &MessageText,
    ) -> Option<Result<HttpResponse, ApiError>> {
        if let Some(resumed) = self.resume_interrupted(text).await {
            return Some(resumed);
        }
        if !super::deliveries::wants_async(self.req) {
            // A text too long to send is refused there, before the wait (and a synchronous
            // send refuses it before its first part).
            return super::deliveries::queued_behind(
                self.req,
                self.outbox,
                self.caller,
                &self.job,
                text.as_str(),
            )
            .await;
        }
        Some(match self.outbox.part_limits().split(text.as_str()) {
            Ok(parts) => {
                super::deliveries::accept(
                    self.req,
                    self.outbox,
                    self.caller,
                    &self.job,
                    parts,
                    true,
                )
                .await
            }
            Err(too_long) => Err(too_long.into()),
        })
    }

    /// The synchronous send's turn at its target, held until it ends (see
    /// [`crate::delivery::Outbox::hold_target`]): alone for a text that may be several posts.
    pub async fn hold_target(&self, text: &MessageText) -> crate::delivery::TargetHold {
        self.outbox
            .hold_target_for_text(&self.job.target(), text.as_str())
            .await
    }

    /// A retry whose key an earlier attempt held until it was cut off (the gateway died or
    /// stopped; see [`InterruptedAttempt`]): any of its parts may be in the channel, so the
    /// outbox takes the message over, looks for each part posted since that attempt began, and
    /// posts only those it does not find. Answers 202 naming the delivery; `None` for a request
    /// that is no such retry.
    async fn resume_interrupted(
        &self,
        text: &MessageText,
    ) -> Option<Result<HttpResponse, ApiError>> {
        // A token's posts cannot be looked up: a webhook's retry is sent again (at least
        // once, as the README says).
        if matches!(self.job, crate::delivery::Job::Webhook { .. }) {
            return None;
        }
        let earlier = self.req.extensions().get::<InterruptedAttempt>().copied()?;
        let parts = match self.outbox.part_limits().split(text.as_str()) {
            Ok(parts) => parts,
            Err(too_long) => return Some(Err(too_long.into())),
        };
        let key = delivery_key(self.req);
        // The first attempt may have run in this process: its posts must be found, not passed
        // over as another send's.
        if let Some(key) = &key {
            self.chat.forget_posted_directly(&key.key);
        }
        let caller = self
            .caller
            .unwrap_or(crate::store::deliveries::callers::ANONYMOUS);
        let taken = self
            .outbox
            .take_over(
                caller,
                &self.job,
                Vec::new(),
                parts.into_vec(),
                // Perhaps another process's attempt: placed on the NAS's clock by this one's
                // distance from it, with room for the replicas' clocks to differ.
                (Some(earlier.since_ms), None),
                key.as_ref(),
            )
            .await;
        Some(match taken {
            Ok(id) => {
                tracing::warn!(delivery = %id, "a send cut off before it answered is finished by the outbox");
                let asked = super::deliveries::wants_async(self.req);
                Ok(super::deliveries::accepted(self.req, id, asked))
            }
            Err(error) => Err(error.into()),
        })
    }
}

/// What a message handed to the outbox is committed under when the request holds an
/// Idempotency-Key (see [`KeyedRequest`]).
fn delivery_key(req: &HttpRequest) -> Option<crate::store::deliveries::EventKey> {
    req.extensions()
        .get::<KeyedRequest>()
        .map(|keyed| keyed.delivery_key.clone())
}

/// Posts `text` into `channel_id` (in the thread of `thread_id`) as the gateway's account, as
/// several posts when it is long, and answers 201 with the first; `what` names the target in a
/// 404.
pub async fn post_text(
    state: &State,
    chat: &Dsm,
    channel_id: ChannelId,
    thread_id: Option<PostId>,
    text: &MessageText,
    what: impl fmt::Display,
    handover: Handover<'_>,
) -> Result<HttpResponse, ApiError> {
    if let Some(resumed) = handover.resume_interrupted(text).await {
        return resumed;
    }
    let what = &what;
    let since = crate::delivery::now_ms();
    let key = handover.key();
    let key = key.as_deref();
    let sent = super::send_text_stopping(
        state,
        text,
        |message| async move {
            chat.create_post(crate::upstream::NewPost {
                channel_id,
                message: &message,
                thread_id,
            })
            .await
            .inspect(|post| chat.note_posted_directly(post.post_id, key))
        },
        |e| ApiError::for_resource(e, what),
    )
    .await;
    // The channel's `last_post_at` in the cached list moved (or may have). A send that
    // posted nothing leaves the list alone: while the NAS is down it is what reads get.
    let may_have_posted = match &sent {
        Ok(_) => true,
        Err(stopped) => !stopped.done.is_empty() || stopped.error.outcome_unknown(),
    };
    if may_have_posted {
        state.caches.channels.invalidate();
    }
    match sent {
        Ok(posts) => Ok(super::created_posts(posts)),
        Err(stopped) => {
            handover
                .finish_stopped(stopped, since, |post| vec![(0, post.post_id.get())])
                .await
        }
    }
}
