//! User operations.

use serde::Deserialize;

use super::client::ChatClient;
use super::error::Result;
use super::ops::{Op, Verb, op};
use crate::domain::User;

const USER_LIST: Op = op("SYNO.Chat.User", "list", 1..=3, Verb::Get);

impl ChatClient {
    pub async fn users(&self) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct Data {
            users: Vec<User>,
        }
        Ok(self.fetch::<Data>(&USER_LIST, &[]).await?.users)
    }
}
