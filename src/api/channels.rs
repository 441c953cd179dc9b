//! `/channels`: the channels the gateway's DSM account can see.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{Chat, CommonProblems, InvalidInput, NotFound, State};
use crate::auth::{Authorized, Read};
use crate::domain::{Channel, ChannelId};
use crate::error::ApiError;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_channels).service(get_channel);
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    items: Vec<Channel>,
}

/// List the channels visible to the gateway's account
///
/// Served from a cache refreshed every `cache.ttl_secs`.
#[utoipa::path(tag = "channels", security(("bearer" = [])),
    responses((status = 200, body = ChannelList), CommonProblems))]
#[get("/channels")]
pub async fn list_channels(
    _: Authorized<Read>,
    state: State,
    chat: Chat,
) -> Result<HttpResponse, ApiError> {
    let list = state.caches.channels.get_or_load(chat.channels()).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(list.body.clone()))
}

/// Get one channel
#[utoipa::path(tag = "channels", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id")),
    responses((status = 200, body = Channel), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}")]
pub async fn get_channel(
    _: Authorized<Read>,
    channel_id: web::Path<ChannelId>,
    state: State,
    chat: Chat,
) -> Result<web::Json<Channel>, ApiError> {
    let channel_id = channel_id.into_inner();
    let list = state.caches.channels.get_or_load(chat.channels()).await?;
    list.items
        .iter()
        .find(|c| c.channel_id == channel_id)
        .cloned()
        .map(web::Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "channel {channel_id} does not exist or is not visible to the gateway's account"
            ))
        })
}
