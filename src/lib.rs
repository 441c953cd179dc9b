//! syno-chat-gateway: a REST/JSON gateway in front of Synology Chat.

pub mod sim;
