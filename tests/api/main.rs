//! Integration tests: each starts its own DSM simulator and gateway on port 0.

mod alertmanager;
#[path = "../support/backends.rs"]
mod backends;
mod contract;
mod deliveries;
mod dsm_request_shapes;
mod entry_cgi;
mod events;
mod hardening;
mod helpers;
mod hooks;
mod idempotency;
mod inbound_dsm;
mod keys;
mod long_messages;
mod matrix;
mod ntfy;
mod observability;
mod replicas;
mod resilience;
mod resources;
mod reverse_proxy;
mod subscriptions;
mod surface_channels;
mod surface_integrations;
mod surface_posts;
mod telegram;
mod tls;
mod upstream_faults;

#[path = "../support/postgres.rs"]
mod postgres;
#[path = "../support/posts.rs"]
mod posts;
