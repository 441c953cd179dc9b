//! Stickers, Chat's admin settings, and information about the Chat server (PROTOCOL.md [C1]). Their answers'
//! shapes are not documented, so DSM's `data` object is handed on as it is (an answer without
//! `data` as an empty object).

use serde_json::{Map, Value};

use super::client::DsmClient;
use super::error::Result;
use super::ops::{Op, Verb, op};

const STICKER_LIST: Op = op("SYNO.Chat.Sticker", "list", 1..=2, Verb::Get);
const ADMIN_SETTING_GET: Op = op("SYNO.Chat.Admin.Setting", "get", 1..=5, Verb::Get);
const APP_GET: Op = op("SYNO.Chat.App", "get", 1..=1, Verb::Get);
const MISC_GET: Op = op("SYNO.Chat.Misc", "get", 1..=1, Verb::Get);

impl DsmClient {
    pub async fn stickers(&self) -> Result<Map<String, Value>> {
        self.fetch_or_empty(&STICKER_LIST, &[]).await
    }

    pub async fn admin_settings(&self) -> Result<Map<String, Value>> {
        self.fetch_or_empty(&ADMIN_SETTING_GET, &[]).await
    }

    pub async fn app_info(&self) -> Result<Map<String, Value>> {
        self.fetch_or_empty(&APP_GET, &[]).await
    }

    pub async fn misc_info(&self) -> Result<Map<String, Value>> {
        self.fetch_or_empty(&MISC_GET, &[]).await
    }
}
