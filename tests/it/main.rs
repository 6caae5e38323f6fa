//! The one integration-test binary: the real server on ephemeral ports, real
//! clients (reqwest, the generated tonic client), real databases (SQLite in a
//! temp dir, PostgreSQL in a throwaway database cloned from a template migrated
//! once per run).
//!
//! One module per resource (conversations/, messages/, providers/, auth/), one file per
//! action; the service-wide behaviours (hostile input, resilience,
//! operations, the public surface and its snapshots, the OpenAPI document,
//! the CLI) have a file each.

mod auth;
mod cli;
mod cluster;
mod conversations;
mod disk;
mod harness;
mod hostile;
mod idempotency;
mod messages;
mod openapi;
mod operations;
mod policies;
mod policies_client;
mod providers;
mod resilience;
mod surface;
mod usage;
mod usage_client;
