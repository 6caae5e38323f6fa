//! conversation-service: the platform's Conversation API over gRPC (tonic) and
//! REST/JSON (axum), on one diesel store (SQLite by default, PostgreSQL in
//! production). See the README for the tour and DESIGN.md for the reasons.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod egress;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod pb;
pub mod protocol;
pub mod provider;
pub mod secrets;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
