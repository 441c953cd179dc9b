//! Integrations: webhooks, bots, chatbots and the token-based SYNO.Chat.External.

use super::server::Cx;
use super::store::State;
use super::wire::{R, err};

const METHODS: &[(&str, &[&str])] = &[];

pub(crate) fn has_method(api: &str, method: &str) -> bool {
    METHODS
        .iter()
        .any(|(a, ms)| *a == api && ms.contains(&method))
}

pub(crate) fn handle(_api: &str, _cx: &mut Cx, _st: &mut State) -> R {
    Err(err(103))
}
