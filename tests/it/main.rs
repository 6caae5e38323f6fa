//! The one integration-test binary: the real server on ephemeral ports, real
//! clients (reqwest, the generated tonic client), real databases (SQLite in a
//! temp dir, PostgreSQL in a throwaway database).

mod cli;
mod create;
mod harness;
mod hostile;
mod idempotency;
mod jwt;
mod listing;
mod openapi;
mod operations;
mod prompt;
mod resilience;
mod surface;
