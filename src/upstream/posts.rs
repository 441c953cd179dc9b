//! Post operations of `SYNO.Chat.Post` and `SYNO.Chat.Post.File`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::client::{Download, DsmClient, NewPost, Upload};
use super::error::{Result, UpstreamError};
use super::ops::{Op, Verb, op};
use crate::domain::{ChannelId, FileProps, Post, PostId, UserId};

const POST_LIST: Op = op("SYNO.Chat.Post", "list", 1..=8, Verb::Get);
const POST_CREATE: Op = op("SYNO.Chat.Post", "create", 1..=8, Verb::Post);
/// Uploads go through version 5, the one whose multipart form is known (upstream-protocol §4.1).
const POST_UPLOAD: Op = op("SYNO.Chat.Post", "create", 5..=5, Verb::Post);
const POST_SEARCH: Op = op("SYNO.Chat.Post", "search", 1..=8, Verb::Get);
const POST_PIN: Op = op("SYNO.Chat.Post", "pin", 1..=8, Verb::Post);
const POST_UNPIN: Op = op("SYNO.Chat.Post", "unpin", 1..=8, Verb::Post);
const POST_THREAD_LIST: Op = op("SYNO.Chat.Post", "thread_list", 1..=8, Verb::Get);
const POST_FILE_GET: Op = op("SYNO.Chat.Post.File", "get", 2..=2, Verb::Get);

/// A closed set of words DSM accepts for a parameter.
pub trait WireWord: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

/// Declares a [`WireWord`] enum. Each word must be its variant's name in snake case, which is
/// how serde and the OpenAPI schema spell it.
macro_rules! wire_word {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl WireWord for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }
    };
}

wire_word!(
    /// Kinds of posts `search` can filter on (DSM's `post_type`).
    PostType { File = "file", Normal = "normal" }
);
wire_word!(
    /// Properties `search` can filter on (DSM's `has`; DSM ignores any other value).
    PostHas { Pin = "pin", Url = "url", Star = "star" }
);
wire_word!(
    /// Orders `search` can sort by, newest first.
    SearchOrder {
        CreateAt = "create_at",
        UpdateAt = "update_at",
        LastPinAt = "last_pin_at",
        LastCommentAt = "last_comment_at",
    }
);

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

/// A page of threads: root posts, newest activity first, and their latest replies.
pub struct ThreadPage {
    pub roots: Vec<Post>,
    pub replies: Vec<Post>,
    pub total: u64,
}

/// A file post to create.
pub struct NewFilePost<'a> {
    pub channel_id: ChannelId,
    /// Caption; may be empty.
    pub message: &'a str,
    pub file: Upload,
}

/// What `Post.create` answers: at least the new post's id. Fields it leaves out are the ones
/// just sent.
#[derive(Deserialize)]
struct Created {
    post_id: PostId,
    #[serde(default)]
    creator_id: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    create_at: Option<u64>,
    #[serde(default)]
    update_at: Option<u64>,
    #[serde(default)]
    thread_id: Option<u64>,
    #[serde(default)]
    comment_count: Option<u64>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    file_props: Option<FileProps>,
}

impl Created {
    fn into_post(
        self,
        channel_id: ChannelId,
        message: &str,
        thread_id: Option<PostId>,
        kind: &str,
    ) -> Post {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let create_at = self.create_at.unwrap_or(now_ms);
        Post {
            post_id: self.post_id,
            channel_id,
            creator_id: self.creator_id.unwrap_or_default(),
            message: self.message.unwrap_or_else(|| message.to_owned()),
            create_at,
            update_at: self.update_at.unwrap_or(create_at),
            thread_id: self.thread_id.or(thread_id.map(PostId::get)).unwrap_or(0),
            comment_count: self.comment_count.unwrap_or(0),
            last_comment_at: None,
            kind: self.kind.unwrap_or_else(|| kind.to_owned()),
            file_props: self.file_props,
        }
    }
}

/// DSM takes lists as JSON text (`in=[72,73]`, `has=["pin"]`, upstream-protocol §1.2).
fn json_list<T: Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

impl DsmClient {
    pub async fn posts(&self, channel_id: ChannelId, limit: u32, offset: u32) -> Result<Vec<Post>> {
        #[derive(Deserialize)]
        struct Data {
            posts: Vec<Post>,
        }
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
        Ok(self.fetch::<Data>(&POST_LIST, &params).await?.posts)
    }

    pub async fn create_post(&self, new: NewPost<'_>) -> Result<Post> {
        let channel_id = new.channel_id.to_string();
        let thread_id = new.thread_id.map(|t| t.to_string());
        let mut params = vec![
            ("channel_id", channel_id.as_str()),
            ("message", new.message.as_str()),
            // Must be the string `normal`: a numeric type stores an invisible post (§4.1).
            ("type", "normal"),
        ];
        if let Some(thread_id) = &thread_id {
            params.push(("thread_id", thread_id.as_str()));
        }
        let created: Created = self.fetch(&POST_CREATE, &params).await?;
        Ok(created.into_post(
            new.channel_id,
            new.message.as_str(),
            new.thread_id,
            "normal",
        ))
    }

    /// Posts a file (multipart `Post.create` v5, the file as the last part).
    pub async fn create_file_post(&self, new: NewFilePost<'_>) -> Result<Post> {
        let channel_id = new.channel_id.to_string();
        let params = [
            ("channel_id", channel_id.as_str()),
            ("type", "file"),
            ("message", new.message),
        ];
        let created: Created = self
            .call_upload(&POST_UPLOAD, &params, &new.file)
            .await?
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(
                    "SYNO.Chat.Post create answered without data".to_owned(),
                )
            })?;
        let mut post = created.into_post(new.channel_id, new.message, None, "file");
        post.file_props.get_or_insert_with(|| FileProps {
            name: new.file.file_name.clone(),
            size: new.file.bytes.len() as u64,
        });
        Ok(post)
    }

    pub async fn search_posts(&self, query: &PostSearch<'_>) -> Result<SearchPage> {
        #[derive(Deserialize)]
        struct Data {
            search_results: Vec<Post>,
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
        // `in` is required; DSM ignores a `channel_id` here and searches everywhere (§4.1).
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
            ("thread_id", thread_id.as_deref()),
        ];
        params.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name, v))),
        );
        let data: Data = self.fetch(&POST_SEARCH, &params).await?;
        Ok(SearchPage {
            total: data.total.unwrap_or(data.search_results.len() as u64),
            posts: data.search_results,
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
            search_results: Vec<Post>,
            #[serde(default)]
            related_posts: Vec<Post>,
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
        let data: Data = self.fetch(&POST_THREAD_LIST, &params).await?;
        Ok(ThreadPage {
            total: data.total.unwrap_or(data.search_results.len() as u64),
            roots: data.search_results,
            replies: data.related_posts,
        })
    }

    /// The file attached to a post, as DSM sends it.
    pub async fn post_file(&self, post_id: PostId) -> Result<Download> {
        let post_id = post_id.to_string();
        self.call_download(&POST_FILE_GET, &[("post_id", post_id.as_str())])
            .await
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
    fn wire_words_serialise_as_dsm_spells_them() {
        serialise_as_their_words::<PostType>();
        serialise_as_their_words::<PostHas>();
        serialise_as_their_words::<SearchOrder>();
        assert_eq!(json_list(&[PostHas::Pin, PostHas::Url]), r#"["pin","url"]"#);
    }
}
