//! Channel operations.

use serde::Deserialize;

use super::client::ChatClient;
use super::error::Result;
use super::ops::{Op, Verb, op};
use crate::domain::Channel;

pub const CHANNEL_LIST: Op = op("SYNO.Chat.Channel", "list", 1..=5, Verb::Get);

impl ChatClient {
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        #[derive(Deserialize)]
        struct Data {
            channels: Vec<Channel>,
        }
        Ok(self.fetch::<Data>(&CHANNEL_LIST, &[]).await?.channels)
    }
}
