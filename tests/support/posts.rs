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
