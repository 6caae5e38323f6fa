//! Compiles the protos with the pure-Rust `protox` (no system `protoc`), generates
//! the tonic/prost code from the resulting descriptors, and writes the full
//! descriptor set (imports included) to OUT_DIR for server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flashback/conversation/v1/conversation.proto",
        "proto/flashback/ai/v1/provider.proto",
        "proto/flashback/ai/v1/policy.proto",
        "proto/flashback/ai/v1/usage.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?
        .file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("conversation_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    // Well-known types map to prost-types (prost-build's default extern path).
    // The codec blames undecodable requests on the sender (see src/grpc/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
