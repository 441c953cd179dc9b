//! DSM's wire forms, private to `upstream/`, each with its one conversion into the API's type:
//! posts here, channels and users in [`channel`], integrations in [`integration`]. A DSM
//! rename then fails a conversion test instead of silently changing the API. The structs borrow
//! strings from the response body (`Cow` stays borrowed unless a string holds escapes) and name
//! only the fields used: the rest (`hashtags`, `mentions`, `attachments`, integration tokens,
//! …) is skipped without being built. Post ids arrive as plain numbers here, so they are read as
//! `u64` and checked once in [`WirePost::into_post`]. The posts page the API serves is written
//! from DSM's bytes in one pass by [`page`], held to these conversions by a differential test.

mod channel;
mod integration;
pub(super) mod page;

pub(super) use channel::{WireChannel, WireUser};
pub(super) use integration::{WireChatbot, WireCreatedIntegration, WireWebhook};

use std::borrow::Cow;

use serde::Deserialize;

use super::error::{Result, UpstreamError};
use crate::domain::{ChannelId, FileProps, Post, PostId, PostKind, UserId};

#[derive(Deserialize)]
pub(super) struct WireFileProps<'a> {
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    size: u64,
}

impl WireFileProps<'_> {
    fn into_props(self) -> FileProps {
        FileProps {
            name: self.name.into_owned(),
            size: self.size,
        }
    }
}

/// A post as `Post.list`, `search`, `thread_list` and `External` lists send it.
#[derive(Deserialize)]
pub(super) struct WirePost<'a> {
    post_id: u64,
    channel_id: u64,
    #[serde(default)]
    creator_id: u64,
    #[serde(default, borrow)]
    message: Cow<'a, str>,
    #[serde(default)]
    create_at: u64,
    #[serde(default)]
    update_at: u64,
    #[serde(default)]
    thread_id: u64,
    #[serde(default)]
    comment_count: u64,
    #[serde(default)]
    last_comment_at: Option<u64>,
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    file_props: Option<WireFileProps<'a>>,
}

fn invalid(what: &str, error: String) -> UpstreamError {
    UpstreamError::InvalidResponse(format!("{what}: {error}"))
}

/// 0 is DSM's "none" for optional ids; `what` names the resource in the error.
fn optional_id<T>(
    what: &str,
    raw: u64,
    new: fn(u64) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    match raw {
        0 => Ok(None),
        raw => new(raw).map(Some).map_err(|e| invalid(what, e)),
    }
}

/// Decodes a list that was read into a JSON value first (token calls, uploads, integration
/// lists whose key varies), borrowing its strings, and converts each item.
pub(super) fn list_from_value<'v, W: Deserialize<'v>, R>(
    what: &str,
    items: &'v serde_json::Value,
    convert: fn(W) -> Result<R>,
) -> Result<Vec<R>> {
    let wire = Vec::<W>::deserialize(items).map_err(|e| invalid(what, e.to_string()))?;
    wire.into_iter().map(convert).collect()
}

impl WirePost<'_> {
    pub(super) fn into_post(self) -> Result<Post> {
        Ok(Post {
            post_id: PostId::new(self.post_id).map_err(|e| invalid("post", e))?,
            channel_id: ChannelId::new(self.channel_id).map_err(|e| invalid("post", e))?,
            creator_id: optional_id("post", self.creator_id, UserId::new)?,
            message: self.message.into_owned(),
            create_at: self.create_at,
            update_at: self.update_at,
            thread_id: optional_id("post", self.thread_id, PostId::new)?,
            comment_count: self.comment_count,
            last_comment_at: self.last_comment_at,
            kind: PostKind::from_word(&self.kind),
            file_props: self.file_props.map(WireFileProps::into_props),
        })
    }
}

/// A list of posts, each converted as soon as it is read: no list of wire posts in between,
/// and room for a page reserved up front (a list grown one doubling at a time was copied five
/// times on the way to 50 posts). The first post that does not convert is the list's error.
pub(super) struct Posts(Result<Vec<Post>>);

/// Room reserved when the reader cannot tell the length: a full default page.
const PAGE_GUESS: usize = 64;

impl Posts {
    pub(super) fn into_result(self) -> Result<Vec<Post>> {
        self.0
    }
}

impl Default for Posts {
    fn default() -> Self {
        Self(Ok(Vec::new()))
    }
}

impl<'de> Deserialize<'de> for Posts {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Posts;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of posts")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Posts, A::Error> {
                let mut posts = Vec::with_capacity(seq.size_hint().unwrap_or(PAGE_GUESS).min(1024));
                while let Some(wire) = seq.next_element::<WirePost<'de>>()? {
                    match wire.into_post() {
                        Ok(post) => posts.push(post),
                        Err(error) => {
                            // The rest is still read, so the document is checked whole.
                            while seq.next_element::<WirePost<'de>>()?.is_some() {}
                            return Ok(Posts(Err(error)));
                        }
                    }
                }
                Ok(Posts(Ok(posts)))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// Converts posts that were read into a JSON value first (rare paths: token calls, uploads).
pub(super) fn posts_from_value(posts: &serde_json::Value) -> Result<Vec<Post>> {
    list_from_value("posts", posts, WirePost::into_post)
}

/// What `Post.create` answers: at least the new post's id. Fields it leaves out are the ones
/// just sent.
#[derive(Deserialize)]
pub(super) struct WireCreated<'a> {
    post_id: u64,
    #[serde(default)]
    creator_id: Option<u64>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    create_at: Option<u64>,
    #[serde(default)]
    update_at: Option<u64>,
    #[serde(default)]
    thread_id: Option<u64>,
    #[serde(default)]
    comment_count: Option<u64>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_props: Option<WireFileProps<'a>>,
}

/// What was sent with a `Post.create`, to fill in what DSM's answer leaves out.
pub(super) struct Sent<'a> {
    pub channel_id: ChannelId,
    pub message: &'a str,
    pub thread_id: Option<PostId>,
    pub kind: PostKind,
}

impl WireCreated<'_> {
    pub(super) fn into_post(self, sent: Sent<'_>) -> Result<Post> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let create_at = self.create_at.unwrap_or(now_ms);
        let thread_id = match self.thread_id {
            Some(raw) => optional_id("created post", raw, PostId::new)?,
            None => sent.thread_id,
        };
        Ok(Post {
            post_id: PostId::new(self.post_id).map_err(|e| invalid("created post", e))?,
            channel_id: sent.channel_id,
            creator_id: optional_id("created post", self.creator_id.unwrap_or(0), UserId::new)?,
            message: self
                .message
                .map_or_else(|| sent.message.to_owned(), Cow::into_owned),
            create_at,
            update_at: self.update_at.unwrap_or(create_at),
            thread_id,
            comment_count: self.comment_count.unwrap_or(0),
            last_comment_at: None,
            kind: self.kind.map_or(sent.kind, |k| PostKind::from_word(&k)),
            file_props: self.file_props.map(WireFileProps::into_props),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sonic-rs decodes DSM's answers and writes the posts page (for speed); it must give the
    /// bytes serde_json gives, for a realistic page and for every kind of character.
    #[test]
    fn sonic_rs_reads_and_writes_posts_exactly_as_serde_json() {
        #[derive(Deserialize)]
        struct Data {
            posts: Posts,
        }
        let page = include_bytes!("../../tests/bench/data/post_list.json");
        let decoded =
            super::super::envelope::decode_data(page, |data: Data| data.posts.into_result())
                .unwrap()
                .unwrap();
        let by_serde: serde_json::Value = serde_json::from_slice(page).unwrap();
        let by_serde = posts_from_value(&by_serde["data"]["posts"]).unwrap();
        assert_eq!(decoded.len(), 50);
        assert_eq!(
            sonic_rs::to_string(&decoded).unwrap(),
            serde_json::to_string(&by_serde).unwrap()
        );

        let every_char: String = (0u32..0x800)
            .chain([0x2028, 0x2029, 0xfeff, 0xfffd, 0x1f600])
            .filter_map(char::from_u32)
            .collect();
        for text in [every_char.as_str(), "\"\\/\u{7f}<script>&amp;", ""] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(sonic_rs::to_string(text).unwrap(), json);
            let back: String = sonic_rs::from_str(&json).unwrap();
            assert_eq!(back, text);
        }
        let escaped = r#""\u00e9\ud83d\ude00\n\t\"\\\/""#;
        let sonic: String = sonic_rs::from_str(escaped).unwrap();
        let serde: String = serde_json::from_str(escaped).unwrap();
        assert_eq!(sonic, serde);
        // What serde_json refuses (a lone surrogate, invalid UTF-8), DSM's answers are refused for.
        for body in [
            &br#"{"success": true, "data": "\ud800"}"#[..],
            b"{\"success\": true, \"data\": \"\xff\"}",
        ] {
            let decoded = super::super::envelope::decode_data(body, |text: String| Ok(text));
            assert!(decoded.is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// Renames each of `fields` on the wire in turn (`"f":` becomes `"f_v2":`, first
    /// occurrence): the `required` ones must fail the conversion, the others must change the
    /// API's answer, which the type's field-by-field test then reports. Every field the API
    /// serves must be in one of the lists, so a field added later is not left untested.
    pub(super) fn assert_renames_are_noticed<R: serde::Serialize>(
        json: &str,
        fields: &[&str],
        required: &[&str],
        convert: impl Fn(&str) -> Result<R>,
    ) {
        let expected = serde_json::to_value(convert(json).unwrap()).unwrap();
        for served in expected.as_object().unwrap().keys() {
            assert!(
                fields.contains(&served.as_str()) || required.contains(&served.as_str()),
                "the API serves {served}, which no rename checks"
            );
        }
        for field in fields.iter().chain(required) {
            let tag = format!("\"{field}\":");
            assert!(json.contains(&tag), "{field} is not in the sample");
            let renamed = json.replacen(&tag, &format!("\"{field}_v2\":"), 1);
            match convert(&renamed) {
                Err(_) => assert!(required.contains(field), "renaming {field} failed"),
                Ok(converted) => {
                    assert!(!required.contains(field), "renaming {field} did not fail");
                    let converted = serde_json::to_value(converted).unwrap();
                    assert_ne!(converted, expected, "renaming {field} went unnoticed");
                }
            }
        }
    }

    /// A post exactly as DSM 7 sends it in `Post.list` (tests/bench/data/post_list.json), with
    /// an escaped quote in the message and a file.
    const DSM_POST: &str = r#"{"post_id":4294967307,"channel_id":1,"creator_id":8,"message":"Build \"4001\" deployed","create_at":1700000061000,"update_at":1700000062000,"type":"file","is_sticky":false,"comment_count":1,"thread_id":0,"hashtags":[],"mentions":[],"attachments":null,"file_props":{"name":"a.txt","size":3,"path":"x"}}"#;

    fn convert(json: &str) -> Result<Post> {
        let wire: WirePost = serde_json::from_str(json)
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        wire.into_post()
    }

    #[test]
    fn a_dsm_post_becomes_the_api_post_field_by_field() {
        let post = convert(DSM_POST).unwrap();
        assert_eq!(
            serde_json::to_string(&post).unwrap(),
            r#"{"post_id":4294967307,"channel_id":1,"creator_id":8,"message":"Build \"4001\" deployed","create_at":1700000061000,"update_at":1700000062000,"thread_id":0,"comment_count":1,"type":"file","file_props":{"name":"a.txt","size":3}}"#
        );
        assert_eq!(post.kind, PostKind::File);
        assert_eq!(post.thread_id, None);
    }

    #[test]
    fn a_renamed_dsm_field_fails_the_conversion_instead_of_changing_the_api() {
        // Every field the API serves, renamed on the wire one at a time: required ids fail to
        // decode, others change the API's answer, which the field-by-field check above would
        // report. Here: the answer must differ from the unrenamed one or fail.
        let expected = serde_json::to_string(&convert(DSM_POST).unwrap()).unwrap();
        for field in [
            "post_id",
            "channel_id",
            "creator_id",
            "message",
            "create_at",
            "update_at",
            "type",
            "comment_count",
            "file_props",
        ] {
            let renamed =
                DSM_POST.replacen(&format!("\"{field}\":"), &format!("\"{field}_v2\":"), 1);
            match convert(&renamed) {
                Err(_) => assert!(matches!(field, "post_id" | "channel_id"), "{field}"),
                Ok(post) => assert_ne!(serde_json::to_string(&post).unwrap(), expected, "{field}"),
            }
        }
    }

    #[test]
    fn zero_ids_are_refused_or_read_as_none() {
        assert!(convert(&DSM_POST.replace("\"post_id\":4294967307", "\"post_id\":0")).is_err());
        let system = convert(&DSM_POST.replace("\"creator_id\":8", "\"creator_id\":0")).unwrap();
        assert_eq!(system.creator_id, None);
        let json = serde_json::to_value(&system).unwrap();
        assert_eq!(json["creator_id"], 0, "served as DSM spells none");
        let reply =
            convert(&DSM_POST.replace("\"thread_id\":0", "\"thread_id\":4294967306")).unwrap();
        assert_eq!(reply.thread_id.map(PostId::get), Some(4294967306));
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let body = r#"{"post_id":1,"channel_id":1,"message":"plain","type":"normal"}"#;
        let wire: WirePost = serde_json::from_str(body).unwrap();
        assert!(matches!(wire.message, Cow::Borrowed("plain")));
        assert!(matches!(wire.kind, Cow::Borrowed("normal")));
    }

    #[test]
    fn a_creation_answer_is_completed_from_what_was_sent() {
        let wire: WireCreated = serde_json::from_str(r#"{"post_id":4294967308}"#).unwrap();
        let post = wire
            .into_post(Sent {
                channel_id: ChannelId::new(1).unwrap(),
                message: "hi",
                thread_id: PostId::new(4294967307).ok(),
                kind: PostKind::Normal,
            })
            .unwrap();
        assert_eq!(post.message, "hi");
        assert_eq!(post.thread_id.map(PostId::get), Some(4294967307));
        assert_eq!(post.kind.as_str(), "normal");
    }
}
