//! Code generated from `proto/` by build.rs.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("flashback.conversation.v1");

/// `flashback.ai.v1`: the AI resources around prompting.
pub mod ai {
    tonic::include_proto!("flashback.ai.v1");
}

/// The encoded descriptor set of our protos and their imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("conversation_descriptor");
