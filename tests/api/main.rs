//! Integration tests: each starts its own DSM simulator and gateway on port 0.

#[path = "../support/backends.rs"]
mod backends;
mod contract;
mod helpers;
mod idempotency;
mod keys;
mod observability;
#[path = "../support/postgres.rs"]
mod postgres;
mod resilience;
mod resources;
mod reverse_proxy;
mod surface_channels;
mod surface_integrations;
mod surface_posts;
mod tls;
