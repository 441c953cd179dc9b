//! `GET /integrations/tokens`: each configured integration token looked for among the
//! integrations DSM lists, for the usual mix-ups (a chatbot's token configured as an incoming
//! webhook's, an outgoing webhook's or slash command's token, a webhook deleted or disabled
//! since). Nothing is sent with the tokens; they are never shown.

use actix_web::{get, web};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::common::{Items, TokenCheckList};
use super::{CommonProblems, Dsm, State};
use crate::api::error::ApiError;
use crate::auth::{Admin, Authorized};
use crate::config::TokenKind;
use crate::upstream::{Refusal, UpstreamError, WebhookKind};

/// The integrations whose tokens DSM lists, as the check names them; `None` is the chatbots.
const LISTED: [(&str, Option<WebhookKind>); 4] = [
    ("incoming_webhook", Some(WebhookKind::Incoming)),
    ("chatbot", None),
    ("outgoing_webhook", Some(WebhookKind::Outgoing)),
    ("slash_command", Some(WebhookKind::Slash)),
];

/// A configured integration token, as DSM's integrations show it.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
#[schema(example = json!({"name": "alerts", "kind": "webhook", "state": "wrong_kind",
    "found_as": "chatbot"}))]
pub struct TokenCheck {
    /// The configured name (`tokens.<name>`).
    name: String,
    /// What it is configured as: `webhook` (an incoming webhook's) or `bot` (a chatbot's).
    #[schema(value_type = String)]
    kind: TokenKind,
    state: TokenState,
    /// For `wrong_kind`: the integration that has the token (`incoming_webhook`, `chatbot`,
    /// `outgoing_webhook`, `slash_command`).
    #[serde(skip_serializing_if = "Option::is_none")]
    found_as: Option<&'static str>,
}

/// `ok`: an enabled integration of the configured kind has it; `wrong_kind`: only an
/// integration of another kind (`found_as`), so DSM refuses what is sent with it as configured;
/// `not_found`: no enabled integration has it (deleted, disabled or mistyped).
#[derive(Serialize, ToSchema, Debug, PartialEq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Ok,
    WrongKind,
    NotFound,
}

fn listed_as(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Webhook => "incoming_webhook",
        TokenKind::Bot => "chatbot",
    }
}

/// Where `token` is among DSM's lists (each compared in constant time, all of them).
fn check(
    name: &str,
    token: &SecretString,
    kind: TokenKind,
    lists: &[(&'static str, Vec<SecretString>)],
) -> TokenCheck {
    let holds = |tokens: &[SecretString]| {
        tokens.iter().fold(false, |found, listed| {
            let same = listed
                .expose_secret()
                .as_bytes()
                .ct_eq(token.expose_secret().as_bytes());
            found | bool::from(same)
        })
    };
    let holders: Vec<&'static str> = lists
        .iter()
        .filter(|(_, tokens)| holds(tokens))
        .map(|(integration, _)| *integration)
        .collect();
    let (state, found_as) = if holders.contains(&listed_as(kind)) {
        (TokenState::Ok, None)
    } else if let Some(other) = holders.first() {
        (TokenState::WrongKind, Some(*other))
    } else {
        (TokenState::NotFound, None)
    };
    TokenCheck {
        name: name.to_owned(),
        kind,
        state,
        found_as,
    }
}

/// Check the configured integration tokens
///
/// Looks for each token of `tokens.<name>` among the integrations DSM lists (incoming and
/// outgoing webhooks, slash commands, chatbots; disabled ones count as absent) and says whether
/// it is what it is configured as. Nothing is sent with the tokens, and they are never shown.
/// Listing integrations needs a Chat admin account: without one, DSM's refusal is the answer.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = TokenCheckList), CommonProblems))]
#[get("/integrations/tokens")]
pub async fn check_tokens(
    _: Authorized<Admin>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<Items<TokenCheck>>, ApiError> {
    let mut lists = Vec::with_capacity(LISTED.len());
    if !state.tokens.is_empty() {
        for (integration, kind) in LISTED {
            let tokens = match chat.inbound_tokens(kind).await {
                // A Chat that does not offer this kind of integration has none of its tokens.
                Err(UpstreamError::Unsupported { .. } | UpstreamError::NotListed { .. }) => {
                    Vec::new()
                }
                Err(error)
                    if matches!(
                        error.refusal(),
                        Some(Refusal::NoSuchApi | Refusal::NoSuchMethod)
                    ) =>
                {
                    Vec::new()
                }
                listed => listed?,
            };
            lists.push((integration, tokens));
        }
    }
    let items = state
        .tokens
        .iter()
        .map(|(name, configured)| check(name, &configured.token, configured.kind, &lists))
        .collect();
    Ok(web::Json(Items { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(values: &[&str]) -> Vec<SecretString> {
        values.iter().map(|v| SecretString::from(*v)).collect()
    }

    #[test]
    fn a_token_is_found_as_configured_as_another_kind_or_nowhere() {
        let lists = vec![
            ("incoming_webhook", tokens(&["w1", "w2"])),
            ("chatbot", tokens(&["b1"])),
            ("outgoing_webhook", tokens(&["o1"])),
            ("slash_command", tokens(&[])),
        ];
        let state = |token: &str, kind| {
            let checked = check("t", &SecretString::from(token), kind, &lists);
            (checked.state, checked.found_as)
        };
        assert_eq!(state("w2", TokenKind::Webhook), (TokenState::Ok, None));
        assert_eq!(state("b1", TokenKind::Bot), (TokenState::Ok, None));
        assert_eq!(
            state("b1", TokenKind::Webhook),
            (TokenState::WrongKind, Some("chatbot"))
        );
        assert_eq!(
            state("o1", TokenKind::Bot),
            (TokenState::WrongKind, Some("outgoing_webhook"))
        );
        assert_eq!(state("w", TokenKind::Webhook), (TokenState::NotFound, None));
    }
}
