//! Outbound HTTP from "Chat" to integrators: outgoing webhooks, slash commands and chatbots
//! fire when a UI user posts (never for posts made through the API), and a JSON `{"text"}`
//! answer is posted back into the channel.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::server::{Shared, lock};
use super::store::now_ms;

pub(crate) struct Delivery {
    pub url: String,
    pub fields: Vec<(String, String)>,
    /// (channel_id, bot user_id) to post a reply as; None for slash commands.
    pub reply_to: Option<(i64, i64)>,
}

/// One form POST made by the simulator, for tests.
#[derive(Clone, Debug)]
pub struct OutboundEvent {
    pub url: String,
    pub fields: Vec<(String, String)>,
    /// HTTP status of the integrator's answer, None when the request failed.
    pub status: Option<u16>,
    /// post_id of the reply posted back, if any.
    pub reply_post_id: Option<i64>,
}

pub(crate) async fn deliver(shared: Arc<Shared>, d: Delivery) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut event = OutboundEvent {
        url: d.url.clone(),
        fields: d.fields.clone(),
        status: None,
        reply_post_id: None,
    };
    if let Ok(mut resp) = client.post(&d.url).send_form(&d.fields).await {
        event.status = Some(resp.status().as_u16());
        let body = resp.body().limit(1 << 20).await.unwrap_or_default();
        // Empty or non-JSON answers are ignored.
        if let (Some((channel_id, bot)), Ok(Value::Object(m))) =
            (d.reply_to, serde_json::from_slice::<Value>(&body))
            && let Some(text) = m
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.trim().is_empty())
        {
            let mut st = lock(&shared.state);
            event.reply_post_id = st.add_post(channel_id, bot, text, 0, now_ms());
        }
    }
    lock(&shared.outbound).push(event);
}
