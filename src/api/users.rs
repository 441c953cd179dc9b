//! `/users`: Chat users.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{Chat, CommonProblems, InvalidInput, NotFound, State};
use crate::auth::{Authorized, Read};
use crate::domain::{User, UserId};
use crate::error::ApiError;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_users).service(get_user);
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    items: Vec<User>,
}

/// List Chat users
///
/// Served from a cache refreshed every `cache.ttl_secs`.
#[utoipa::path(tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserList), CommonProblems))]
#[get("/users")]
pub async fn list_users(
    _: Authorized<Read>,
    state: State,
    chat: Chat,
) -> Result<HttpResponse, ApiError> {
    let list = state.caches.users.get_or_load(chat.users()).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(list.body.clone()))
}

/// Get one user
#[utoipa::path(tag = "users", security(("bearer" = [])),
    params(("user_id" = u64, Path, minimum = 1, description = "User id")),
    responses((status = 200, body = User), InvalidInput, NotFound, CommonProblems))]
#[get("/users/{user_id}")]
pub async fn get_user(
    _: Authorized<Read>,
    user_id: web::Path<UserId>,
    state: State,
    chat: Chat,
) -> Result<web::Json<User>, ApiError> {
    let user_id = user_id.into_inner();
    let list = state.caches.users.get_or_load(chat.users()).await?;
    list.items
        .iter()
        .find(|u| u.user_id == user_id)
        .cloned()
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found(format!("user {user_id} does not exist")))
}
