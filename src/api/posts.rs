//! `/channels/{channel_id}/posts` and `/posts/{post_id}/...`: reading and writing messages,
//! thread replies and files.

use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, get, mime, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{ChannelPath, FileBytes, Handover, Page, PostList, PostPath, post_text};
use super::deliveries::Deliveries;
use super::extract::{Json, Query};
use super::post_upload::read_file_form;
use super::{
    BodyProblems, CommittedToOutbox, CommonProblems, Dsm, InvalidInput, NotFound, State,
    file_response,
};
use crate::api::error::{ApiError, ProblemCode};
use crate::auth::{Authorized, Read, Write};
use crate::delivery::Job;
use crate::domain::{ChannelId, MessageText, Post, PostId};
use crate::upstream::{Download, NewFilePost, UpstreamError};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_posts)
        .service(create_post)
        .service(upload_file)
        .service(reply_to_post)
        .service(get_post_file);
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
/// Top-level posts, newest first, whatever order DSM lists them in; thread replies are not
/// included. Page with `before`, the last `post_id` of the page before: it asks DSM
/// from that post, so pages neither repeat nor skip posts while new ones arrive.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(ChannelPath, Page),
    responses((status = 200, body = PostList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/posts")]
pub async fn list_posts(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    page: Query<Page>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    // Another channel's post as the anchor: DSM would answer this channel's newest page, and
    // a client that mixed its cursors up would start over without knowing. No such post in
    // this channel: a 404, as for any anchor the channel does not have.
    if let Some(before) = page.before
        && before.get() >> 32 != channel_id.get()
    {
        return Err(ApiError::not_found(format!(
            "before: post {before} is not in channel {channel_id} (post ids are \
             channel_id << 32 | sequence)"
        )));
    }
    let body = chat
        .posts_json(channel_id, page.limit.get(), page.offset.get(), page.before)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
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
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(ChannelPath,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the message is stored; the outbox delivers it (JSON messages only)")),
    request_body = NewPostBody,
    responses((status = 201, description = "The (first) post created", body = Post,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))),
        CommittedToOutbox,
        InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/posts")]
pub async fn create_post(
    auth: Authorized<Write>,
    path: web::Path<ChannelPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> Result<HttpResponse, actix_web::Error> {
    let channel_id = path.channel_id;
    if is_multipart_form(&req) {
        return post_file(channel_id, &req, payload, &state, &chat, &outbox).await;
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
    let handover = Handover {
        req: &req,
        chat: &chat,
        outbox: &outbox,
        caller: auth.key_name.as_deref(),
        job: Job::Channel {
            channel_id,
            thread_id: body.thread_id,
        },
    };
    if let Some(accepted) = handover.accept_if_asked_or_queued(&body.message).await {
        return Ok(accepted?);
    }
    let _turn = handover.hold_target(&body.message).await;
    // DSM's 117 does not say which of the two it did not find.
    let channel = match body.thread_id {
        Some(thread_id) => format!("channel {channel_id} or thread {thread_id}"),
        None => format!("channel {channel_id}"),
    };
    Ok(post_text(
        &state,
        &chat,
        channel_id,
        body.thread_id,
        &body.message,
        channel,
        handover,
    )
    .await?)
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
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(ChannelPath),
    request_body(content = NewFilePostForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Post), InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/files")]
pub async fn upload_file(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> Result<HttpResponse, actix_web::Error> {
    if !is_multipart_form(&req) {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "the body must be `multipart/form-data` with a `file` part",
        )
        .into());
    }
    post_file(path.channel_id, &req, payload, &state, &chat, &outbox).await
}

/// 503 `uploads_busy`: `server.max_concurrent_uploads` uploads are held already.
pub(super) fn uploads_busy() -> ApiError {
    ApiError::new(
        ProblemCode::UploadsBusy,
        "too many uploads are in progress; try again shortly",
    )
    .with_retry_after(5)
}

/// Streams a `multipart/form-data` upload (within the size limit) into a file post.
async fn post_file(
    channel_id: ChannelId,
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    chat: &Dsm,
    outbox: &crate::delivery::Outbox,
) -> Result<HttpResponse, actix_web::Error> {
    // A keyed upload already holds its upload slot and its whole file (the idempotency
    // layer read it): it does not wait with them, which would keep uploads to other channels
    // out; it is told at once.
    let patience = if req.extensions().contains::<super::UploadPermit>() {
        std::time::Duration::ZERO
    } else {
        outbox.queue_wait()
    };
    let _turn = super::deliveries::file_turn(outbox, channel_id, patience).await?;
    // Held until DSM answered: each upload holds its file in memory until then.
    let taken = req.extensions_mut().remove::<super::UploadPermit>();
    let _permit = match taken {
        Some(super::UploadPermit(permit)) => permit,
        None => state
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| uploads_busy())?,
    };
    let form = read_file_form(req, payload, state.max_upload_bytes).await?;
    let post = chat
        .create_file_post(NewFilePost {
            channel_id,
            message: &form.message,
            file: form.file,
        })
        .await;
    // As for a text post: only a post that was (or may have been) made moves the list.
    if post
        .as_ref()
        .map_or_else(UpstreamError::may_have_been_carried_out, |_| true)
    {
        state.caches.channels.invalidate();
    }
    let post = post.map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(HttpResponse::Created().json(post))
}

/// Reply in a post's thread
///
/// Posts into the channel the post belongs to (`post_id >> 32`), with the post as thread root.
/// Answers 201 with the reply. The post must be a thread's root (a top-level post): to answer
/// a reply, reply to its `thread_id`. DSM takes only a root as a thread; a reply's id gets 404.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the reply is stored; the outbox delivers it")),
    request_body = ReplyBody,
    responses((status = 201, description = "The (first) reply created", body = Post,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))),
        CommittedToOutbox,
        InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/posts/{post_id}/replies")]
pub async fn reply_to_post(
    auth: Authorized<Write>,
    path: web::Path<PostPath>,
    req: HttpRequest,
    body: Json<ReplyBody>,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
    let channel_id = channel_of(post_id)?;
    let handover = Handover {
        req: &req,
        chat: &chat,
        outbox: &outbox,
        caller: auth.key_name.as_deref(),
        job: Job::Channel {
            channel_id,
            thread_id: Some(post_id),
        },
    };
    if let Some(accepted) = handover.accept_if_asked_or_queued(&body.message).await {
        return accepted;
    }
    let _turn = handover.hold_target(&body.message).await;
    post_text(
        &state,
        &chat,
        channel_id,
        Some(post_id),
        &body.message,
        format_args!("post {post_id} (a thread's root; to answer a reply, use its thread_id)"),
        handover,
    )
    .await
}

/// Download a post's file
///
/// The bytes with the content type and `Content-Disposition` (file name) DSM sends.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(PostPath),
    responses(
        (status = 200, description = "The file, with the content type DSM gives it (`application/octet-stream` when it names none)",
            content((FileBytes = "application/octet-stream"), (FileBytes = "*/*")),
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"...\"`"))),
        InvalidInput, NotFound, CommonProblems))]
#[get("/posts/{post_id}/file")]
pub async fn get_post_file(
    _: Authorized<Read>,
    path: web::Path<PostPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
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

/// The channel a post lives in: its id's high 32 bits (upstream/PROTOCOL.md [C4]).
fn channel_of(post_id: PostId) -> Result<ChannelId, ApiError> {
    // Such an id is well formed but cannot name a post: like any missing post, a 404.
    ChannelId::new(post_id.get() >> 32).map_err(|_| {
        ApiError::not_found(format!(
            "post {post_id} does not exist (post ids are channel_id << 32 | sequence)"
        ))
    })
}
