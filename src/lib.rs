//! syno-chat-gateway: a REST/JSON gateway in front of Synology Chat.
//!
//! The HTTP face and what guards it:
//! - [`api`]: the HTTP face, one module per resource (handlers validate input into types,
//!   call the DSM client, answer JSON or a problem document), with [`api::error`], which
//!   answers [`problem`]'s errors, and [`api::cache`], the cached user and channel lists;
//! - [`auth`]: API keys and scopes; [`ratelimit`]: token buckets per key and address;
//!   [`browser`]: DNS-rebinding and cross-site defences; [`forwarded`]: the public origin
//!   behind trusted reverse proxies;
//! - [`telemetry`]: request ids; [`logging`]: the log lines; [`metrics`]: the Prometheus
//!   registry.
//!
//! Below it, each with one job:
//! - [`upstream`]: the DSM client, the only code that knows `entry.cgi`;
//! - [`domain`]: validated identifiers, message text and the Chat resources;
//! - [`problem`]: the one error type and table of problem codes, answered by [`api`] and
//!   kept by [`delivery`];
//! - [`chunking`]: long texts as several posts;
//! - [`store`]: the delivery, idempotency and event store (SQLite or PostgreSQL), the only
//!   code that knows SQL;
//! - [`delivery`]: the outbox worker, the only code that retries a message (below it, the DSM
//!   client only logs in again once and asks again when DSM answers a read "busy", and a
//!   synchronous long message waits out DSM's 411 between its parts, its caller still
//!   waiting: [`chunking`]);
//! - [`formats`]: sender formats (Slack, Alertmanager, ...) as pure functions to Chat text;
//! - [`events`]: inbound events from Chat, stored and fanned out.
//!
//! Around them:
//! - [`sim`]: the built-in DSM simulator (demo mode, tests, users' CI), sharing no code with
//!   [`upstream`];
//! - [`config`]: typed, validated settings; [`startup`]: the composition root; [`cli`]: the
//!   command line; [`build_info`]: what was built.

pub mod api;
pub mod auth;
pub mod body_deadline;
pub mod browser;
pub mod build_info;
pub mod chunking;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod formats;
pub mod forwarded;
pub mod front_door;
pub mod later_heads;
pub mod logging;
pub mod metrics;
pub mod problem;
pub mod ratelimit;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
