//! Integration tests: each starts its own DSM simulator and gateway on port 0.

mod contract;
mod helpers;
mod keys;
mod resilience;
mod resources;
