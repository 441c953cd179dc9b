//! syno-chat-gateway: a REST/JSON gateway in front of Synology Chat.
//!
//! - [`api`]: the HTTP face, one module per resource;
//! - [`upstream`]: the DSM client, the only code that knows `entry.cgi`;
//! - [`sim`]: the built-in DSM simulator (demo mode, tests, users' CI);
//! - [`store`]: the delivery store (SQLite or PostgreSQL), the only code that knows SQL;
//! - [`startup`]: the composition root; [`cli`]: the command line.

pub mod api;
pub mod auth;
pub mod browser;
pub mod build_info;
pub mod chunking;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod formats;
pub mod forwarded;
pub mod metrics;
pub mod ratelimit;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upstream;
