//! Finding posts: `/posts/search`, a channel's threads and its attachments.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{ChannelPath, Limit, Offset, UnixMillis};
use super::extract::{Query, whole_number};
use super::{CommonProblems, Dsm, InvalidInput, NotFound};
use crate::api::error::ApiError;
use crate::auth::{Authorized, Read};
use crate::domain::{ChannelId, Post, UserId};
use crate::upstream::{PostHas, PostSearch, PostType, SearchOrder, SortKey, WireWord};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(search_posts)
        .service(list_threads)
        .service(list_attachments);
}

const DEFAULT_REPLIES_PER_THREAD: u32 = 3;
const MAX_REPLIES_PER_THREAD: u32 = 50;

/// Query of `/posts/search`. List parameters take comma-separated values (`has=pin,url`);
/// repeating a parameter is an error.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Channels to search (`1,2`); every chat the account can see when absent.
    #[param(value_type = Option<Vec<ChannelId>>, style = Form, explode = false)]
    channel_id: Option<String>,
    /// Text the message contains (case-insensitive).
    keyword: Option<String>,
    /// Kinds of posts (`file,normal`).
    #[serde(rename = "type")]
    #[param(inline, value_type = Option<Vec<PostType>>, style = Form, explode = false)]
    kind: Option<String>,
    /// Posts that are all of these (`pin`, `url`, `star`).
    #[param(inline, value_type = Option<Vec<PostHas>>, style = Form, explode = false)]
    has: Option<String>,
    /// Authors' user ids (`3,4`).
    #[param(value_type = Option<Vec<UserId>>, style = Form, explode = false)]
    creator_id: Option<String>,
    /// Posts created after this Unix time in milliseconds.
    after: Option<UnixMillis>,
    /// Posts created before this Unix time in milliseconds.
    before: Option<UnixMillis>,
    /// Sort order, newest first (default `create_at`).
    #[param(inline, value_type = Option<SearchOrder>)]
    sort_by: Option<String>,
    /// Fields to sort by in turn, over `sort_by` (`is_sticky,last_pin_at`: pinned posts in pin
    /// order, with `has=pin`).
    #[param(inline, value_type = Option<Vec<SortKey>>, style = Form, explode = false)]
    sort_by_array: Option<String>,
    /// `0`: top-level posts only; a root post's id: the posts of that thread.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    #[serde(default, deserialize_with = "whole_number")]
    thread_id: Option<u64>,
    /// How many hits to skip (default 0).
    #[serde(default)]
    #[param(inline)]
    offset: Offset,
    /// How many hits (1 to 200, default 50).
    #[serde(default)]
    #[param(inline)]
    limit: Limit<50, 200>,
}

/// A page of search hits.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"post_id": 4294967307_u64, "channel_id": 1, "creator_id": 1,
    "message": "Release notes: <https://example.org/notes>", "create_at": 1764133200000_u64,
    "update_at": 1764133200000_u64, "thread_id": 0, "comment_count": 0, "type": "normal"}],
    "total": 1, "offset": 0, "limit": 50}))]
pub struct SearchResult {
    items: Vec<Post>,
    /// All hits, not only this page's.
    total: u64,
    offset: u64,
    limit: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadsQuery {
    /// How many threads to skip (default 0).
    #[serde(default)]
    #[param(inline)]
    offset: Offset,
    /// How many threads (1 to 200, default 20).
    #[serde(default)]
    #[param(inline)]
    limit: Limit<20, 200>,
    /// How many of each thread's latest replies to include (0 to 50, default 3).
    #[param(minimum = 0, maximum = 50)]
    #[serde(default, deserialize_with = "whole_number")]
    replies_per_thread: Option<u32>,
}

/// A page of a channel's threads.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"post_id": 4294967307_u64, "channel_id": 1, "creator_id": 1,
    "message": "Who takes the release?", "create_at": 1764133200000_u64,
    "update_at": 1764133200000_u64, "thread_id": 4294967307_u64, "comment_count": 1,
    "last_comment_at": 1764133260000_u64, "type": "normal"}],
    "related": [{"post_id": 4294967308_u64, "channel_id": 1, "creator_id": 2, "message": "I do.",
    "create_at": 1764133260000_u64, "update_at": 1764133260000_u64, "thread_id": 4294967307_u64,
    "comment_count": 0, "type": "normal"}], "total": 1}))]
pub struct ThreadList {
    /// Thread root posts, most recent reply first.
    items: Vec<Post>,
    /// The latest replies of those threads (match them by `thread_id`).
    related: Vec<Post>,
    /// All threads of the channel, not only this page's.
    total: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttachmentQuery {
    /// How many files (1 to 200, default 50).
    #[serde(default)]
    #[param(inline)]
    limit: Limit<50, 200>,
}

/// A channel's files, newest first, exactly as DSM describes them: the shape of DSM's answer is
/// not documented, so its `data` object is passed on unchanged.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct AttachmentList(Map<String, Value>);

/// Splits a comma-separated parameter; an empty value is an empty list.
fn comma_list<T>(
    field: &str,
    raw: Option<&str>,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(|item| {
            parse(item.trim()).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{field} must be a comma-separated list of {expected}; got {item:?}"
                ))
            })
        })
        .collect()
}

fn positive_id<T>(new: fn(u64) -> Result<T, String>) -> impl Fn(&str) -> Option<T> {
    move |text| text.parse().ok().and_then(|n| new(n).ok())
}

fn word<T: WireWord>(text: &str) -> Option<T> {
    T::ALL.iter().copied().find(|w| w.as_str() == text)
}

fn words<T: WireWord>() -> String {
    T::ALL
        .iter()
        .map(|w| format!("`{}`", w.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Search posts
///
/// Searches the given channels (all visible chats by default) and answers one page of hits with
/// the total. Pinned posts are `has=pin`; files are `type=file`.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(SearchQuery),
    responses((status = 200, body = SearchResult), InvalidInput, CommonProblems))]
#[get("/posts/search")]
pub async fn search_posts(
    _: Authorized<Read>,
    query: Query<SearchQuery>,
    chat: Dsm,
) -> Result<web::Json<SearchResult>, ApiError> {
    let q = query.into_inner();
    let channel_ids = comma_list(
        "channel_id",
        q.channel_id.as_deref(),
        "positive integers",
        positive_id(ChannelId::new),
    )?;
    let creator_ids = comma_list(
        "creator_id",
        q.creator_id.as_deref(),
        "positive integers",
        positive_id(UserId::new),
    )?;
    let post_types = comma_list("type", q.kind.as_deref(), &words::<PostType>(), word)?;
    let has = comma_list("has", q.has.as_deref(), &words::<PostHas>(), word)?;
    let sort_by = q
        .sort_by
        .as_deref()
        .map(|s| {
            word(s).ok_or_else(|| {
                ApiError::invalid(format!("sort_by must be one of {}", words::<SearchOrder>()))
            })
        })
        .transpose()?;
    let sort_by_array = comma_list(
        "sort_by_array",
        q.sort_by_array.as_deref(),
        &words::<SortKey>(),
        word,
    )?;
    let page = chat
        .search_posts(&PostSearch {
            channel_ids: &channel_ids,
            keyword: q.keyword.as_deref().filter(|k| !k.trim().is_empty()),
            post_types: &post_types,
            has: &has,
            creator_ids: &creator_ids,
            after: q.after.map(UnixMillis::get),
            before: q.before.map(UnixMillis::get),
            sort_by,
            sort_by_array: &sort_by_array,
            thread_id: q
                .thread_id
                .map(|t| match i64::try_from(t) {
                    Ok(_) => Ok(t),
                    Err(_) => Err(ApiError::invalid(
                        "thread_id must be at most 9223372036854775807",
                    )),
                })
                .transpose()?,
            offset: q.offset.get(),
            limit: q.limit.get(),
        })
        .await?;
    Ok(web::Json(SearchResult {
        items: page.posts,
        total: page.total,
        offset: page.offset,
        limit: page.limit,
    }))
}

/// List a channel's threads
///
/// Thread root posts with recent replies, most recently active first.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(ChannelPath, ThreadsQuery),
    responses((status = 200, body = ThreadList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/threads")]
pub async fn list_threads(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    query: Query<ThreadsQuery>,
    chat: Dsm,
) -> Result<web::Json<ThreadList>, ApiError> {
    let replies = query
        .replies_per_thread
        .unwrap_or(DEFAULT_REPLIES_PER_THREAD);
    if replies > MAX_REPLIES_PER_THREAD {
        return Err(ApiError::invalid(format!(
            "replies_per_thread must be between 0 and {MAX_REPLIES_PER_THREAD}"
        )));
    }
    let channel_id = path.channel_id;
    let page = chat
        .threads(channel_id, query.offset.get(), query.limit.get(), replies)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(ThreadList {
        items: page.roots,
        related: page.replies,
        total: page.total,
    }))
}

/// List a channel's attachments
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(ChannelPath, AttachmentQuery),
    responses((status = 200, body = AttachmentList, example = json!({"attachments": [{
        "post_id": 4294967309_u64, "channel_id": 1, "creator_id": 1, "message": "", "type": "file",
        "file_props": {"name": "report.pdf", "size": 48213}}], "total": 1})), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/attachments")]
pub async fn list_attachments(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    query: Query<AttachmentQuery>,
    chat: Dsm,
) -> Result<web::Json<AttachmentList>, ApiError> {
    let channel_id = path.channel_id;
    let data = chat
        .attachments(channel_id, query.limit.get())
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(AttachmentList(data)))
}
