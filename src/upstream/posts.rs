//! Post operations.

use serde::Deserialize;

use super::client::{ChatClient, NewPost};
use super::error::Result;
use super::ops::{Op, Verb, op};
use crate::domain::{ChannelId, Post, PostId};

const POST_LIST: Op = op("SYNO.Chat.Post", "list", 1..=8, Verb::Get);
const POST_CREATE: Op = op("SYNO.Chat.Post", "create", 1..=8, Verb::Post);

impl ChatClient {
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
        // DSM answers at least the new post's id; fields it leaves out are the ones just sent.
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
        }
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
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let create_at = created.create_at.unwrap_or(now_ms);
        Ok(Post {
            post_id: created.post_id,
            channel_id: new.channel_id,
            creator_id: created.creator_id.unwrap_or_default(),
            message: created
                .message
                .unwrap_or_else(|| new.message.as_str().to_owned()),
            create_at,
            update_at: created.update_at.unwrap_or(create_at),
            thread_id: created
                .thread_id
                .or(new.thread_id.map(PostId::get))
                .unwrap_or(0),
            comment_count: created.comment_count.unwrap_or(0),
            last_comment_at: None,
            kind: created.kind.unwrap_or_else(|| "normal".to_owned()),
            file_props: None,
        })
    }
}
