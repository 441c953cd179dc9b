//! `/channels/{channel_id}/posts` and `/posts/{post_id}/...`: reading and writing messages,
//! thread replies and files.

use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, get, mime, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::deliveries::{Deliveries, accept, wants_async};
use super::extract::{Json, Query, whole_number};
use super::post_upload::read_file_form;
use super::{
    BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, State, created_posts, file_response,
    send_text,
};
use crate::auth::{Authorized, Read, Write};
use crate::delivery::Job;
use crate::domain::{ChannelId, MessageText, Post, PostId};
use crate::error::{ApiError, ProblemCode};
use crate::upstream::{Download, NewFilePost, NewPost};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_posts)
        .service(create_post)
        .service(upload_file)
        .service(reply_to_post)
        .service(get_post_file);
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// Earliest instant accepted as Unix milliseconds (1973-03-03): smaller numbers are almost
/// certainly seconds, which DSM would read as January 1970.
const MIN_UNIX_MS: u64 = 100_000_000_000;

/// `limit` when given, else `default`; 400 outside `1..=max`.
pub(super) fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(format!(
            "limit must be between 1 and {max}"
        )))
    }
}

/// Smallest Unix time in milliseconds after the year 2286: anything larger is no timestamp.
const MAX_UNIX_MS: u64 = 10_000_000_000_000;

/// Largest offset: the document says int32, so larger values are refused, not clipped.
pub(super) const MAX_OFFSET: u32 = i32::MAX as u32;

/// `offset` when given, else 0; 400 above [`MAX_OFFSET`].
pub(super) fn page_offset(offset: Option<u32>) -> Result<u32, ApiError> {
    match offset.unwrap_or(0) {
        offset if offset <= MAX_OFFSET => Ok(offset),
        _ => Err(ApiError::invalid(format!(
            "offset must be between 0 and {MAX_OFFSET}"
        ))),
    }
}

/// Checks that `value` of `field` is a Unix time in milliseconds.
pub(super) fn unix_ms(field: &str, value: u64) -> Result<u64, ApiError> {
    if value < MIN_UNIX_MS {
        return Err(ApiError::invalid(format!(
            "{field} must be a Unix time in milliseconds; {value} looks like seconds"
        )));
    }
    if value >= MAX_UNIX_MS {
        return Err(ApiError::invalid(format!(
            "{field} must be a Unix time in milliseconds before {MAX_UNIX_MS}"
        )));
    }
    Ok(value)
}

/// Checks that `value` of `field` is a Unix time in milliseconds after now.
pub(super) fn future_unix_ms(field: &str, value: u64) -> Result<u64, ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if unix_ms(field, value)? <= now_ms {
        // Well formed, but not a time a schema can rule out: 422, not 400.
        return Err(ApiError::new(
            ProblemCode::Unprocessable,
            format!("{field} must be in the future (now is {now_ms})"),
        ));
    }
    Ok(value)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// How many posts (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    #[serde(default, deserialize_with = "whole_number")]
    limit: Option<u32>,
    /// How many of the newest posts to skip (default 0).
    #[param(minimum = 0, maximum = 2147483647)]
    #[serde(default, deserialize_with = "whole_number")]
    offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct PostList {
    items: Vec<Post>,
}

/// A message to post.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Deploy finished: 100% & green", "thread_id": null}))]
pub struct NewPostBody {
    /// The text, sent to Chat byte for byte. `<https://url|label>` makes a link.
    message: MessageText,
    /// Reply in the thread of this root post.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1)]
    thread_id: Option<PostId>,
}

/// A file to post, as `multipart/form-data`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "The weekly report", "file": "<bytes of report.pdf>"}))]
#[allow(dead_code)] // documentation only: the form is read part by part by `read_file_form`
pub struct NewFilePostForm {
    /// The file (its part's file name and content type are passed on to Chat). Must be the
    /// last part.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Caption (optional, may be empty).
    message: Option<String>,
}

/// A file's bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documentation only: files are streamed from DSM's answer
pub struct FileBytes(Vec<u8>);

/// A reply in a thread.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "On it."}))]
pub struct ReplyBody {
    /// The text, sent to Chat byte for byte.
    message: MessageText,
}

/// List a channel's posts
///
/// Top-level posts, newest first as DSM returns them; thread replies are not included.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id"), PageQuery),
    responses((status = 200, body = PostList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/posts")]
pub async fn list_posts(
    _: Authorized<Read>,
    channel_id: web::Path<ChannelId>,
    page: Query<PageQuery>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(page.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let channel_id = channel_id.into_inner();
    let items = chat
        .posts(channel_id, limit, page_offset(page.offset)?)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    // Written once into a buffer of about the page's size: no regrowth, no copy afterwards.
    let mut body = Vec::with_capacity(16 + 400 * items.len());
    serde_json::to_writer(&mut body, &PostList { items })
        .map_err(|e| ApiError::new(ProblemCode::Internal, e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(body))
}

/// Post a message to a channel
///
/// Posts text (optionally as a thread reply). Text with `%`, `&`, `+`, quotes, new lines and
/// non-ASCII characters arrives unchanged. Answers 201 with the post DSM created. A text longer
/// than `delivery.max_message_chars` is posted as consecutive posts (split at paragraph, line,
/// then word boundaries); the answer is the first and `X-Chat-Post-Count` says how many.
///
/// This route also takes the `multipart/form-data` upload of `POST
/// /channels/{channel_id}/files`; that one is documented separately because client generators
/// cannot handle one operation with two body types.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the message is stored; the outbox delivers it (JSON messages only)")),
    request_body = NewPostBody,
    responses((status = 201, description = "The (first) post created", body = Post,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))),
        (status = 202, description = "With `Prefer: respond-async`: committed to the outbox (`Location` names the delivery)", body = super::deliveries::DeliveryAccepted),
        InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/posts")]
pub async fn create_post(
    auth: Authorized<Write>,
    channel_id: web::Path<ChannelId>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> Result<HttpResponse, actix_web::Error> {
    let channel_id = channel_id.into_inner();
    if is_multipart_form(&req) {
        return post_file(channel_id, &req, payload, &state, &chat).await;
    }
    let is_json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if !is_json {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "the body must be `application/json` (a message) or `multipart/form-data` (a file)",
        )
        .into());
    }
    let body = Json::<NewPostBody>::from_request(&req, &mut payload.into_inner()).await?;
    if wants_async(&req) {
        let job = Job::Channel {
            channel_id,
            thread_id: body.thread_id,
        };
        return Ok(accept(
            &outbox,
            auth.key_name.as_deref(),
            &job,
            body.message.as_str(),
        )
        .await?);
    }
    let (chat, thread_id) = (&chat, body.thread_id);
    let posts = send_text(
        &state,
        &body.message,
        |message| async move {
            chat.create_post(NewPost {
                channel_id,
                message: &message,
                thread_id,
            })
            .await
        },
        |e| ApiError::for_resource(e, format_args!("channel {channel_id}")),
    )
    .await?;
    Ok(created_posts(posts))
}

fn is_multipart_form(req: &HttpRequest) -> bool {
    req.mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA)
}

/// Post a file to a channel
///
/// `multipart/form-data` with the part `file` (at most `server.max_upload_bytes`; larger
/// uploads are refused with 413 while they arrive) and the optional caption part `message`.
/// Answers 201 with the file post DSM created.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id")),
    request_body(content = NewFilePostForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Post), InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/files")]
pub async fn upload_file(
    _: Authorized<Write>,
    channel_id: web::Path<ChannelId>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, actix_web::Error> {
    if !is_multipart_form(&req) {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "the body must be `multipart/form-data` with a `file` part",
        )
        .into());
    }
    post_file(channel_id.into_inner(), &req, payload, &state, &chat).await
}

/// Streams a `multipart/form-data` upload (within the size limit) into a file post.
async fn post_file(
    channel_id: ChannelId,
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    chat: &Dsm,
) -> Result<HttpResponse, actix_web::Error> {
    // Held until DSM answered: each upload holds its file in memory until then.
    let _permit = state.uploads.try_acquire().map_err(|_| {
        ApiError::new(
            ProblemCode::UploadsBusy,
            "too many uploads are in progress; try again shortly",
        )
        .with_retry_after(5)
    })?;
    let form = read_file_form(req, payload, state.max_upload_bytes).await?;
    let post = chat
        .create_file_post(NewFilePost {
            channel_id,
            message: &form.message,
            file: form.file,
        })
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(HttpResponse::Created().json(post))
}

/// Reply in a post's thread
///
/// Posts into the channel the post belongs to (`post_id >> 32`), with the post as thread root.
/// Answers 201 with the reply.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("post_id" = u64, Path, minimum = 1, description = "Id of the thread's root post")),
    request_body = ReplyBody,
    responses((status = 201, description = "The (first) reply created", body = Post,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))),
        InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/posts/{post_id}/replies")]
pub async fn reply_to_post(
    _: Authorized<Write>,
    post_id: web::Path<PostId>,
    body: Json<ReplyBody>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = post_id.into_inner();
    let channel_id = channel_of(post_id)?;
    let chat = &chat;
    let replies = send_text(
        &state,
        &body.message,
        |message| async move {
            chat.create_post(NewPost {
                channel_id,
                message: &message,
                thread_id: Some(post_id),
            })
            .await
        },
        |e| ApiError::for_resource(e, format_args!("post {post_id}")),
    )
    .await?;
    Ok(created_posts(replies))
}

/// Download a post's file
///
/// The bytes with the content type and `Content-Disposition` (file name) DSM sends.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("post_id" = u64, Path, minimum = 1, description = "Id of a file post")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = inline(FileBytes),
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"...\"`"))),
        InvalidInput, NotFound, CommonProblems))]
#[get("/posts/{post_id}/file")]
pub async fn get_post_file(
    _: Authorized<Read>,
    post_id: web::Path<PostId>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = post_id.into_inner();
    let file = chat
        .post_file(post_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("post {post_id} or its file")))?;
    Ok(file_response(Download {
        // A post's file is a download unless DSM says otherwise.
        content_disposition: file
            .content_disposition
            .or_else(|| Some("attachment".to_owned())),
        ..file
    }))
}

/// The channel a post lives in: its id's high 32 bits (upstream-protocol §6.4).
fn channel_of(post_id: PostId) -> Result<ChannelId, ApiError> {
    // Such an id is well formed but cannot name a post: like any missing post, a 404.
    ChannelId::new(post_id.get() >> 32).map_err(|_| {
        ApiError::not_found(format!(
            "post {post_id} does not exist (post ids are channel_id << 32 | sequence)"
        ))
    })
}
