//! `/stickers`, `/admin/settings`, `/app`, `/misc`: DSM's answers passed through, since their
//! shapes are not documented (upstream/PROTOCOL.md [C1]).

use actix_web::{get, web};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::dsm_object;
use super::{CommonProblems, Dsm};
use crate::api::error::ApiError;
use crate::auth::{Admin, Authorized, Read};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_stickers)
        .service(get_admin_settings)
        .service(get_app_info)
        .service(get_misc_info);
}

dsm_object!(
    "DSM's answer to `SYNO.Chat.Sticker list`.",
    StickerCatalog,
    {"stickers": [{"name": "thumbsup", "category": "people"}]}
);
dsm_object!(
    "DSM's answer to `SYNO.Chat.Admin.Setting get`.",
    AdminSettings,
    {"allow_edit_message": true, "allow_edit_message_time_within_min": 0,
        "allow_delete_message": true, "allow_chatbot": true}
);
dsm_object!(
    "DSM's answer to `SYNO.Chat.App get`.",
    AppInfo,
    {"name": "Chat", "version": "2.4.5-22148", "is_admin": true, "user_id": 1}
);
dsm_object!(
    "DSM's answer to `SYNO.Chat.Misc get`.",
    MiscInfo,
    {"server_time": 1764133200000_u64, "unread_count": 3, "max_file_size": 33554432}
);

/// List stickers
///
/// The sticker names usable in sticker posts, as DSM lists them.
#[utoipa::path(security(("bearer" = ["read"])), tag = "misc",
    responses((status = 200, body = StickerCatalog), CommonProblems))]
#[get("/stickers")]
pub async fn list_stickers(
    _: Authorized<Read>,
    chat: Dsm,
) -> Result<web::Json<StickerCatalog>, ApiError> {
    Ok(web::Json(StickerCatalog(chat.stickers().await?)))
}

/// Get Chat's admin settings
///
/// Needs the admin scope and a DSM account with Chat admin rights.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "misc",
    responses((status = 200, body = AdminSettings), CommonProblems))]
#[get("/admin/settings")]
pub async fn get_admin_settings(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<AdminSettings>, ApiError> {
    Ok(web::Json(AdminSettings(chat.admin_settings().await?)))
}

/// Get information about the Chat application
#[utoipa::path(security(("bearer" = ["read"])), tag = "misc",
    responses((status = 200, body = AppInfo), CommonProblems))]
#[get("/app")]
pub async fn get_app_info(_: Authorized<Read>, chat: Dsm) -> Result<web::Json<AppInfo>, ApiError> {
    Ok(web::Json(AppInfo(chat.app_info().await?)))
}

/// Get miscellaneous Chat server information
#[utoipa::path(security(("bearer" = ["read"])), tag = "misc",
    responses((status = 200, body = MiscInfo), CommonProblems))]
#[get("/misc")]
pub async fn get_misc_info(
    _: Authorized<Read>,
    chat: Dsm,
) -> Result<web::Json<MiscInfo>, ApiError> {
    Ok(web::Json(MiscInfo(chat.misc_info().await?)))
}
