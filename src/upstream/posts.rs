//! Post operations of `SYNO.Chat.Post` and `SYNO.Chat.Post.File`.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use super::client::{Download, DsmClient, NewPost, Upload, decode_data};
use super::error::{Result, UpstreamError};
use super::ops::{Op, Verb, op};
use super::wire::{self, Posts, Sent, WireCreated};
use crate::config::PostListPaging;
use crate::domain::{ChannelId, FileProps, Post, PostId, PostKind, UserId};

/// `Post.list`'s data.
#[derive(Deserialize)]
struct PostListData {
    posts: Posts,
}
pub use crate::domain::{PostHas, PostType, SearchOrder, SortKey, WireWord};

const POST_LIST: Op = op("SYNO.Chat.Post", "list", 1..=8, Verb::Get);
// `message` is declared free text, in case a NAS's Info marks `SYNO.Chat.Post` as JSON (none
// known does, PROTOCOL.md [T2]): only then is it sent JSON-encoded.
const POST_CREATE: Op = op("SYNO.Chat.Post", "create", 1..=8, Verb::Post).text(&["message"]);
/// Uploads go through version 5, the one whose multipart form is known (PROTOCOL.md [C1]). The
/// caption is free text as the message is: `123` must not reach a JSON-format NAS as a number.
const POST_UPLOAD: Op = op("SYNO.Chat.Post", "create", 5..=5, Verb::Post).text(&["message"]);
const POST_SEARCH: Op = op("SYNO.Chat.Post", "search", 1..=8, Verb::Get).text(&["keyword"]);
const POST_PIN: Op = op("SYNO.Chat.Post", "pin", 1..=8, Verb::Post);
const POST_UNPIN: Op = op("SYNO.Chat.Post", "unpin", 1..=8, Verb::Post);
const POST_THREAD_LIST: Op = op("SYNO.Chat.Post", "thread_list", 1..=8, Verb::Get);
const POST_FILE_GET: Op = op("SYNO.Chat.Post.File", "get", 2..=2, Verb::Get);

/// A `Post.search` query. Empty lists do not filter.
pub struct PostSearch<'a> {
    /// Empty: every chat the account can see.
    pub channel_ids: &'a [ChannelId],
    pub keyword: Option<&'a str>,
    pub post_types: &'a [PostType],
    pub has: &'a [PostHas],
    pub creator_ids: &'a [UserId],
    /// Unix milliseconds.
    pub after: Option<u64>,
    /// Unix milliseconds.
    pub before: Option<u64>,
    pub sort_by: Option<SearchOrder>,
    /// Empty: DSM's order (or `sort_by`'s); else these fields in turn, over `sort_by`.
    pub sort_by_array: &'a [SortKey],
    /// 0: top-level posts only; a root post's id: that thread.
    pub thread_id: Option<u64>,
    pub offset: u32,
    pub limit: u32,
}

/// One page of search hits.
pub struct SearchPage {
    pub posts: Vec<Post>,
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// How many posts of synchronous sends are remembered for the outbox's duplicate check (it
/// looks at the 100 newest posts of a channel, within minutes).
const DIRECT_POSTS_KEPT: usize = 4096;

/// A key's tag among the direct posts: never 0 (no key).
fn key_tag(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish().max(1)
}

/// A page of threads: root posts, newest activity first, and their latest replies.
pub struct ThreadPage {
    pub roots: Vec<Post>,
    pub replies: Vec<Post>,
    pub total: u64,
}

/// What a create sent, to find its post by when DSM did not name it.
struct Created<'a> {
    channel_id: ChannelId,
    kind: PostKind,
    message: &'a str,
    thread_id: Option<PostId>,
    /// A file's name as the caller gave it and as it went on the wire.
    file_names: [&'a str; 2],
}

/// A file post to create.
pub struct NewFilePost<'a> {
    pub channel_id: ChannelId,
    /// Caption; may be empty.
    pub message: &'a str,
    pub file: Upload,
}

/// DSM takes lists as JSON text (`in=[72,73]`, `has=["pin"]`, PROTOCOL.md [T2]).
fn json_list<T: Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// An anchor past the channel's last possible post: `post_id = channel_id << 32 + running
/// number` (PROTOCOL.md [C4]), so the posts before it are the channel's newest. ACE's recipe,
/// seen on session `Post.list` v8 only: `External`'s post list is asked without `post_id`.
fn newest_anchor(channel_id: ChannelId) -> u64 {
    channel_id
        .get()
        .checked_mul(1 << 32)
        .map(|base| base | 0xFFFF_FFFF)
        .filter(|anchor| i64::try_from(*anchor).is_ok())
        .unwrap_or(i64::MAX as u64)
}

/// A `Post.list` answer's posts.
fn decode_posts(body: &[u8]) -> serde_json::Result<Result<Vec<Post>>> {
    decode_data(body, |data: PostListData| data.posts.into_result())
}

impl DsmClient {
    pub async fn posts(&self, channel_id: ChannelId, limit: u32, offset: u32) -> Result<Vec<Post>> {
        self.post_list(channel_id, limit, offset, decode_posts)
            .await
    }

    /// Whether the NAS is asked with `offset`/`limit` (`upstream.post_list_paging`, unless
    /// the NAS showed it ignores them: [`OffsetPaging`]).
    fn pages_posts_by_offset(&self) -> bool {
        !self.up.offset_paging.is_ignored()
    }

    /// A page of a channel's posts, newest first, as the API's `{"items": [...]}` document:
    /// `limit` posts after skipping `skip`, counted from the newest post or from `before`.
    /// Unless the NAS showed it ignores `offset` ([`OffsetPaging`]), a page without `before` is
    /// asked with `offset`/`limit` and written from DSM's answer in one pass ([`wire::page`]);
    /// an answer that reader gives up on goes the way of [`Self::posts`], which decides its
    /// verdict and error. Other pages are anchored ([`Self::posts_before`]).
    pub async fn posts_json(
        &self,
        channel_id: ChannelId,
        limit: u32,
        skip: u32,
        before: Option<PostId>,
    ) -> Result<Vec<u8>> {
        let anchor = match before {
            Some(post_id) => post_id.get(),
            None if !self.pages_posts_by_offset() => newest_anchor(channel_id),
            None if self.up.offset_paging.is_unproven() => {
                return self.page_while_unproven(channel_id, limit, skip).await;
            }
            None => {
                let (page, answered) = self
                    .post_list(
                        channel_id,
                        limit,
                        skip,
                        |body| match wire::page::posts_page(body, limit as usize) {
                            Some(counted) => Ok(Ok(counted)),
                            None => decode_data(body, |data: PostListData| {
                                let mut posts = data.posts.into_result()?;
                                let answered = posts.len();
                                newest_first(&mut posts);
                                posts.truncate(limit as usize);
                                page_document(&posts).map(|page| (page, answered))
                            }),
                        },
                    )
                    .await?;
                if answered <= limit as usize {
                    return Ok(page);
                }
                // More than asked for: the NAS ignores `limit`, and `offset` with it.
                self.up.offset_paging.ignored();
                newest_anchor(channel_id)
            }
        };
        page_document(&self.posts_before(channel_id, anchor, skip, limit).await?)
    }

    /// A page while the NAS's paging is unproven (PROTOCOL.md [C4]: the seed and n8n page by
    /// `offset`, Chat 2.4.1 ignores it and answers its newest ten, ACE's v8 answers its oldest
    /// post without an anchor). The page is asked both ways, by `offset` and from an anchor,
    /// and the post ids compared: other posts, and paging turns to anchors for good (the
    /// anchored answer is the page). The same posts prove `offset` only where a NAS that
    /// ignores it could not have answered them: a full page of more than ten posts, or of two
    /// or more after skipping some. Anything less (a channel shorter than the page, say) leaves
    /// the question open, and the next page is asked both ways again.
    async fn page_while_unproven(
        &self,
        channel_id: ChannelId,
        limit: u32,
        skip: u32,
    ) -> Result<Vec<u8>> {
        let mut by_offset = self.posts(channel_id, limit, skip).await?;
        let anchored = self
            .posts_before(channel_id, newest_anchor(channel_id), skip, limit)
            .await;
        newest_first(&mut by_offset);
        let (limit, skip) = (limit as usize, skip as usize);
        let page = match anchored {
            Ok(anchored)
                if anchored
                    .iter()
                    .map(|p| p.post_id)
                    .ne(by_offset.iter().map(|p| p.post_id)) =>
            {
                self.up.offset_paging.ignored();
                return page_document(&anchored);
            }
            Ok(_) => {
                let full = by_offset.len() == limit;
                if full && (limit > NEWEST_ANSWERED_IGNORING_OFFSET || skip > 0 && limit >= 2) {
                    self.up.offset_paging.honoured();
                }
                by_offset
            }
            // A NAS that refuses the anchored form for good pages by `offset`.
            Err(error @ UpstreamError::Dsm { .. }) if !error.may_have_been_carried_out() => {
                self.up.offset_paging.honoured();
                by_offset
            }
            // Not an answer about paging (the NAS is busy or down, say): ask again another time.
            Err(error) => {
                tracing::debug!(%error, "Post.list with an anchor not answered; paging unproven");
                by_offset
            }
        };
        page_document(&page)
    }

    async fn post_list<R>(
        &self,
        channel_id: ChannelId,
        limit: u32,
        offset: u32,
        decode: impl Fn(&[u8]) -> serde_json::Result<Result<R>>,
    ) -> Result<R> {
        let (channel_id, limit, offset) = (
            channel_id.to_string(),
            limit.to_string(),
            offset.to_string(),
        );
        let params = [
            ("channel_id", channel_id.as_str()),
            ("limit", limit.as_str()),
            ("offset", offset.as_str()),
        ];
        self.fetch_converted(&POST_LIST, &params, decode).await
    }

    /// Up to `count` of the channel's posts older than the post id `anchor`, newest first,
    /// after the `skip` newest of them: `Post.list` with `post_id`, `prev_count` and
    /// `next_count=0`, the form every source that pages from an anchor uses (PROTOCOL.md [C4]).
    /// DSM may echo the anchor back, perhaps as one of the `prev_count`, so one post more is
    /// asked for than is kept: a page is short only at the channel's oldest post, where a
    /// caller may stop. No source says in which order DSM lists; the posts are ordered here,
    /// by post id, which grows with each post of a channel.
    async fn posts_before(
        &self,
        channel_id: ChannelId,
        anchor: u64,
        skip: u32,
        count: u32,
    ) -> Result<Vec<Post>> {
        self.anchored_list(channel_id, None, anchor, skip, count)
            .await
    }

    /// Up to `count` posts of the channel (or of the thread of `root`) older than post
    /// `anchor`, newest first: the next page back for a search that goes past the newest.
    pub async fn posts_older_than(
        &self,
        channel_id: ChannelId,
        thread: Option<PostId>,
        anchor: u64,
        count: u32,
    ) -> Result<Vec<Post>> {
        self.anchored_list(channel_id, thread, anchor, 0, count)
            .await
    }

    /// The newest replies in the thread of `root` (up to `count`), newest first, to find a
    /// reply the gateway made: the channel's list leaves replies out, so they are asked for with
    /// `thread_id` and an anchor past the channel's last possible id (PROTOCOL.md [C4]).
    pub async fn newest_replies(
        &self,
        channel_id: ChannelId,
        root: PostId,
        count: u32,
    ) -> Result<Vec<Post>> {
        self.anchored_list(channel_id, Some(root), newest_anchor(channel_id), 0, count)
            .await
    }

    async fn anchored_list(
        &self,
        channel_id: ChannelId,
        thread: Option<PostId>,
        anchor: u64,
        skip: u32,
        count: u32,
    ) -> Result<Vec<Post>> {
        let (channel, anchor_text, count_text, thread) = (
            channel_id.to_string(),
            anchor.to_string(),
            skip.saturating_add(count).saturating_add(1).to_string(),
            thread.map(|root| root.to_string()),
        );
        let mut params = vec![
            ("channel_id", channel.as_str()),
            ("post_id", anchor_text.as_str()),
            ("prev_count", count_text.as_str()),
            ("next_count", "0"),
        ];
        if let Some(root) = &thread {
            params.push(("thread_id", root.as_str()));
        }
        let mut posts = self
            .fetch_converted(&POST_LIST, &params, decode_posts)
            .await?;
        posts.retain(|post| post.post_id.get() < anchor);
        newest_first(&mut posts);
        posts.drain(..posts.len().min(skip as usize));
        posts.truncate(count as usize);
        Ok(posts)
    }

    /// The channel's newest posts, up to `count` from each way of asking, to find a post the
    /// gateway made. Sources disagree on `Post.list` (PROTOCOL.md): the seed and n8n page with
    /// `offset`/`limit`; Chat 2.4.1 (v5) ignores them and answers the newest ten; ACE (v8) pages
    /// from an anchor, and without one starts at the oldest post. So the channel is also asked
    /// for the `count` posts before an anchor past its last possible id; the posts of both
    /// answers are returned. A NAS that refuses the anchored form leaves the first answer.
    /// With `upstream.post_list_paging = "anchor"` only the anchored form is asked.
    pub async fn newest_posts(&self, channel_id: ChannelId, count: u32) -> Result<Vec<Post>> {
        let anchor = newest_anchor(channel_id);
        if !self.pages_posts_by_offset() {
            return self.posts_before(channel_id, anchor, 0, count).await;
        }
        let mut posts = self.posts(channel_id, count, 0).await?;
        match self.posts_before(channel_id, anchor, 0, count).await {
            Ok(more) => {
                for post in more {
                    if !posts.iter().any(|p| p.post_id == post.post_id) {
                        posts.push(post);
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "Post.list with an anchor refused; offset/limit alone")
            }
        }
        Ok(posts)
    }

    /// Remembers a post a synchronous send made (see [`Self::posted_directly`]), under the
    /// request's Idempotency-Key (as its delivery key) when it had one.
    pub fn note_posted_directly(&self, post_id: PostId, key: Option<&str>) {
        let mut posts = self
            .up
            .direct_posts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if posts.len() == DIRECT_POSTS_KEPT {
            posts.pop_front();
        }
        posts.push_back((post_id.get(), key.map_or(0, key_tag)));
    }

    /// Forgets the posts made under `key`: a retry of that request, whose first attempt was
    /// cut off, hands the message to the outbox, and the outbox must find those posts.
    pub fn forget_posted_directly(&self, key: &str) {
        let tag = key_tag(key);
        self.up
            .direct_posts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, by)| *by != tag);
    }

    /// The NAS's clock less this host's (ms), from the `Date` of DSM's last dated answer.
    pub fn nas_clock_offset_ms(&self) -> Option<i64> {
        self.up.nas_clock_offset_ms()
    }

    /// Whether a synchronous send of this process made `post_id` (one of the latest
    /// [`DIRECT_POSTS_KEPT`]): the outbox's duplicate check, looking for a post of its own
    /// with the same text, passes it over, or a message sent both ways would be taken for
    /// posted when only the synchronous one is.
    pub fn posted_directly(&self, post_id: u64) -> bool {
        self.up
            .direct_posts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(id, _)| *id == post_id)
    }

    pub async fn create_post(&self, new: NewPost<'_>) -> Result<Post> {
        let channel_id = new.channel_id.to_string();
        let thread_id = new.thread_id.map(|t| t.to_string());
        let mut params = vec![
            ("channel_id", channel_id.as_str()),
            ("message", new.message.as_str()),
            // Must be the string `normal`: a numeric type stores an invisible post (PROTOCOL.md [C1]).
            ("type", "normal"),
        ];
        if let Some(thread_id) = &thread_id {
            params.push(("thread_id", thread_id.as_str()));
        }
        let sent_at = unix_ms();
        let created = self
            .fetch_converted(&POST_CREATE, &params, |body| {
                decode_data(body, |created: Option<WireCreated>| {
                    created
                        .map(|created| {
                            created.into_post(Sent {
                                channel_id: new.channel_id,
                                message: new.message.as_str(),
                                thread_id: new.thread_id,
                                kind: PostKind::Normal,
                            })
                        })
                        .transpose()
                })
            })
            .await?;
        let post = match created {
            Some(post) => post,
            // A bare success (PROTOCOL.md [T3]: some writes answer without `data`): the post
            // exists, so it is found rather than reported as a failure, which would invite the
            // caller to post it again.
            None => {
                let wanted = Created {
                    channel_id: new.channel_id,
                    kind: PostKind::Normal,
                    message: new.message.as_str(),
                    thread_id: new.thread_id,
                    file_names: [""; 2],
                };
                return self.find_created(&wanted, sent_at).await;
            }
        };
        self.up.note_nas_clock_of_post(post.create_at);
        Ok(post)
    }

    /// Posts a file (multipart `Post.create` v5, the file as the last part).
    pub async fn create_file_post(&self, new: NewFilePost<'_>) -> Result<Post> {
        let channel_id = new.channel_id.to_string();
        let params = [
            ("channel_id", channel_id.as_str()),
            ("type", "file"),
            ("message", new.message),
            // The seed and Chat's own UI send it (empty is accepted, PROTOCOL.md [C1]).
            ("conn_id", ""),
        ];
        let sent_at = unix_ms();
        let created: Option<serde_json::Value> =
            self.call_upload(&POST_UPLOAD, &params, &new.file).await?;
        let Some(created) = created.filter(|c| c.get("post_id").is_some()) else {
            // The seed describes an upload's answer as `file_props` alone, and a bare success
            // says no more: the post exists, so it is found among the channel's newest
            // instead of reported as a failure (which would invite a second upload).
            let sent_name = super::transport::wire_file_name(&new.file.file_name);
            let wanted = Created {
                channel_id: new.channel_id,
                kind: PostKind::File,
                message: new.message,
                thread_id: None,
                file_names: [new.file.file_name.as_str(), &sent_name],
            };
            return self.find_created(&wanted, sent_at).await;
        };
        // Uploads are rare and large: the answer is read owned, then converted the same way.
        let created = WireCreated::deserialize(&created)
            .map_err(|e| UpstreamError::InvalidResponse(format!("created post: {e}")))?;
        let mut post = created.into_post(Sent {
            channel_id: new.channel_id,
            message: new.message,
            thread_id: None,
            kind: PostKind::File,
        })?;
        post.file_props.get_or_insert_with(|| FileProps {
            name: new.file.file_name.clone(),
            size: new.file.bytes.len() as u64,
        });
        Ok(post)
    }

    /// The newest post in `wanted`'s channel that is what was sent (its kind, text, thread and,
    /// for a file, its name as the caller gave it or as it went on the wire), created since
    /// `sent_at` (less a minute of NAS clock skew): the post of a create DSM accepted without
    /// naming it.
    async fn find_created(&self, wanted: &Created<'_>, sent_at: u64) -> Result<Post> {
        const NEWEST: u32 = 20;
        const SKEW_MS: u64 = 60_000;
        let earliest = sent_at.saturating_sub(SKEW_MS);
        self.newest_posts(wanted.channel_id, NEWEST)
            .await?
            .into_iter()
            .filter(|post| {
                post.kind == wanted.kind
                    && post.message == wanted.message
                    && post.create_at >= earliest
                    && (wanted.thread_id.is_none() || post.thread_id == wanted.thread_id)
                    && match wanted.kind {
                        PostKind::File => post
                            .file_props
                            .as_ref()
                            .is_some_and(|f| wanted.file_names.contains(&f.name.as_str())),
                        _ => true,
                    }
            })
            .max_by_key(|post| (post.create_at, post.post_id.get()))
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(format!(
                    "SYNO.Chat.Post create accepted the post without naming it, and no such \
                     post is among channel {}'s newest {NEWEST}",
                    wanted.channel_id
                ))
            })
    }

    pub async fn search_posts(&self, query: &PostSearch<'_>) -> Result<SearchPage> {
        #[derive(Deserialize)]
        struct Data {
            search_results: Posts,
            #[serde(default)]
            total: Option<u64>,
        }
        let within = json_list(query.channel_ids);
        let post_types = json_list(query.post_types);
        let has = json_list(query.has);
        let creator_ids = json_list(query.creator_ids);
        let (offset, limit) = (query.offset.to_string(), query.limit.to_string());
        let after = query.after.map(|t| t.to_string());
        let before = query.before.map(|t| t.to_string());
        let thread_id = query.thread_id.map(|t| t.to_string());
        let sort_by = query.sort_by.map(|s| s.as_str());
        let sort_by_array = json_list(query.sort_by_array);
        // `in` is required; DSM ignores a `channel_id` here and searches everywhere (PROTOCOL.md [C1]).
        let mut params = vec![
            ("in", within.as_str()),
            ("offset", offset.as_str()),
            ("limit", limit.as_str()),
        ];
        let optional = [
            ("keyword", query.keyword),
            (
                "post_type",
                (!query.post_types.is_empty()).then_some(post_types.as_str()),
            ),
            ("has", (!query.has.is_empty()).then_some(has.as_str())),
            (
                "creator_ids",
                (!query.creator_ids.is_empty()).then_some(creator_ids.as_str()),
            ),
            ("after", after.as_deref()),
            ("before", before.as_deref()),
            ("sort_by", sort_by),
            (
                "sort_by_array",
                (!query.sort_by_array.is_empty()).then_some(sort_by_array.as_str()),
            ),
            ("thread_id", thread_id.as_deref()),
        ];
        params.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name, v))),
        );
        let (total, posts) = self
            .fetch_converted(&POST_SEARCH, &params, |body| {
                decode_data(body, |data: Data| {
                    let posts = data.search_results.into_result()?;
                    Ok((data.total.unwrap_or(posts.len() as u64), posts))
                })
            })
            .await?;
        Ok(SearchPage {
            total,
            posts,
            offset: u64::from(query.offset),
            limit: u64::from(query.limit),
        })
    }

    pub async fn pin_post(&self, post_id: PostId, pinned: bool) -> Result<()> {
        let op = if pinned { &POST_PIN } else { &POST_UNPIN };
        let post_id = post_id.to_string();
        self.call::<serde::de::IgnoredAny>(op, &[("post_id", post_id.as_str())])
            .await
            .map(drop)
    }

    pub async fn threads(
        &self,
        channel_id: ChannelId,
        offset: u32,
        limit: u32,
        replies_per_thread: u32,
    ) -> Result<ThreadPage> {
        #[derive(Deserialize)]
        struct Data {
            search_results: Posts,
            #[serde(default)]
            related_posts: Posts,
            #[serde(default)]
            total: Option<u64>,
        }
        let (channel_id, offset, limit, related) = (
            channel_id.to_string(),
            offset.to_string(),
            limit.to_string(),
            replies_per_thread.to_string(),
        );
        let params = [
            ("channel_id", channel_id.as_str()),
            ("offset", offset.as_str()),
            ("limit", limit.as_str()),
            ("related_comment_count", related.as_str()),
        ];
        self.fetch_converted(&POST_THREAD_LIST, &params, |body| {
            decode_data(body, |data: Data| {
                let roots = data.search_results.into_result()?;
                Ok(ThreadPage {
                    total: data.total.unwrap_or(roots.len() as u64),
                    roots,
                    replies: data.related_posts.into_result()?,
                })
            })
        })
        .await
    }

    /// The file attached to a post, as DSM sends it.
    pub async fn post_file(&self, post_id: PostId) -> Result<Download> {
        let post_id = post_id.to_string();
        self.call_download(&POST_FILE_GET, &[("post_id", post_id.as_str())])
            .await
    }
}

/// The API's page document of `posts`, as they are ordered.
fn page_document(posts: &[Post]) -> Result<Vec<u8>> {
    wire::page::items_json(posts).map_err(|e| UpstreamError::InvalidResponse(e.to_string()))
}

/// How many posts Chat 2.4.1 answers `Post.list` with whatever its `limit` (PROTOCOL.md [C4]).
const NEWEST_ANSWERED_IGNORING_OFFSET: usize = 10;

/// Posts in the API's order, newest first: no source says in which order DSM lists them, and
/// a post id grows with each post of a channel.
fn newest_first(posts: &mut [Post]) {
    posts.sort_unstable_by_key(|post| std::cmp::Reverse(post.post_id));
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the NAS has shown of `Post.list`'s `offset`/`limit` (PROTOCOL.md [C4]: sources
/// disagree; the seed and n8n page by them, Chat 2.4.1 ignores them, ACE's v8 answers its
/// oldest post without an anchor). With `upstream.post_list_paging = "offset"` it starts
/// unproven, and each page is asked both ways ([`DsmClient::page_while_unproven`]): an answer
/// of more posts than asked, or other posts than the anchored ask's, turns paging to anchors
/// for the life of the process; the same posts where a NAS ignoring `offset` could not have
/// answered them prove it, and from then on each page is asked once.
pub(crate) struct OffsetPaging(AtomicU8);

const UNPROVEN: u8 = 0;
const HONOURED: u8 = 1;
const IGNORED: u8 = 2;

impl OffsetPaging {
    pub(crate) fn new(configured: PostListPaging) -> Self {
        Self(AtomicU8::new(match configured {
            PostListPaging::Offset => UNPROVEN,
            PostListPaging::Anchor => IGNORED,
        }))
    }

    fn is_ignored(&self) -> bool {
        self.0.load(Ordering::Relaxed) == IGNORED
    }

    fn is_unproven(&self) -> bool {
        self.0.load(Ordering::Relaxed) == UNPROVEN
    }

    fn honoured(&self) {
        let _ = self
            .0
            .compare_exchange(UNPROVEN, HONOURED, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn ignored(&self) {
        if self.0.swap(IGNORED, Ordering::Relaxed) != IGNORED {
            tracing::warn!(
                "the NAS does not page Post.list by offset/limit: pages are asked from an anchor \
                 from now on (upstream.post_list_paging = \"anchor\" starts that way)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialise_as_their_words<T: WireWord + Serialize>() {
        for word in T::ALL {
            assert_eq!(serde_json::to_value(word).unwrap(), word.as_str());
        }
    }

    #[test]
    fn an_uploads_caption_is_free_text_as_a_posts_message_is() {
        // Both are `Post.create`'s `message`: JSON-encoded alike on a NAS that asks for JSON.
        assert_eq!(POST_UPLOAD.text_params, POST_CREATE.text_params);
        assert_eq!(POST_UPLOAD.text_params, ["message"]);
    }

    #[test]
    fn wire_words_serialise_as_dsm_spells_them() {
        serialise_as_their_words::<PostType>();
        serialise_as_their_words::<PostHas>();
        serialise_as_their_words::<SearchOrder>();
        serialise_as_their_words::<SortKey>();
        assert_eq!(json_list(&[PostHas::Pin, PostHas::Url]), r#"["pin","url"]"#);
    }
}
