//! Reading what a test posted: the messages of a page of posts the gateway answered.

use serde_json::Value;

/// The messages of `{"items": [Post, ...]}`, oldest first (by post id).
pub fn messages_oldest_first(page: &Value) -> Vec<String> {
    let mut posts: Vec<(u64, String)> = page["items"]
        .as_array()
        .expect("a page of posts")
        .iter()
        .map(|p| {
            (
                p["post_id"].as_u64().expect("a post id"),
                p["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    posts.sort();
    posts.into_iter().map(|(_, m)| m).collect()
}

/// The id of user `user_id`'s conversation with a chatbot, from the bot's
/// `{"items": [Channel, ...]}` (`GET /api/v1/bots/{name}/channels`); `None` before the bot
/// ever wrote to them.
pub fn conversation_with(channels: &Value, user_id: u64) -> Option<u64> {
    channels["items"]
        .as_array()
        .expect("a list of channels")
        .iter()
        .find(|c| {
            c["type"] == "chatbot"
                && c["members"]
                    .as_array()
                    .is_some_and(|members| members.contains(&Value::from(user_id)))
        })
        .and_then(|c| c["channel_id"].as_u64())
}
