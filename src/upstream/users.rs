//! User operations.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{Download, DsmClient, decode_data};
use super::error::Result;
use super::ops::{Op, Verb, op};
use super::wire::WireUser;
use crate::domain::{User, UserId};

const USER_LIST: Op = op("SYNO.Chat.User", "list", 1..=3, Verb::Get);
// Only version 1 of these is known (PROTOCOL.md [T1]); their answers are not documented.
const STATUS_GET: Op = op("SYNO.Chat.User.Status", "get", 1..=1, Verb::Get);
const AVATAR_GET: Op = op("SYNO.Chat.User.Avatar", "get", 1..=1, Verb::Get);
/// The account's own preferences: no parameters, a small answer, allowed to every account that
/// may use Chat, so it is also the cheapest proof that a session is alive.
pub(super) const PREFERENCE_GET: Op = op("SYNO.Chat.User.Preference", "get", 1..=1, Verb::Get);

impl DsmClient {
    pub async fn users(&self) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            users: Vec<WireUser<'a>>,
        }
        self.fetch_converted(&USER_LIST, &[], |body| {
            decode_data(body, |data: Data| {
                data.users.into_iter().map(WireUser::into_user).collect()
            })
        })
        .await
    }

    /// A user's presence, as DSM's free-form `data` object (empty when DSM answers none).
    pub async fn user_status(&self, user_id: UserId) -> Result<Map<String, Value>> {
        let user_id = user_id.to_string();
        self.fetch_or_empty(&STATUS_GET, &[("user_id", user_id.as_str())])
            .await
    }

    /// A user's avatar image.
    pub async fn user_avatar(&self, user_id: UserId) -> Result<Download> {
        let user_id = user_id.to_string();
        self.call_download(&AVATAR_GET, &[("user_id", user_id.as_str())])
            .await
    }

    /// The gateway account's own Chat preferences, as DSM's free-form `data` object (empty
    /// when DSM answers none).
    pub async fn own_preferences(&self) -> Result<Map<String, Value>> {
        self.fetch_or_empty(&PREFERENCE_GET, &[]).await
    }
}
