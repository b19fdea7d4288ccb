//! Compiles `proto/` with protox (pure Rust), so a fresh machine needs no `protoc`.
//! The descriptor set is also written out for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tessera/v1/types.proto",
        "proto/tessera/v1/authorization_service.proto",
        "proto/tessera/v1/token_admin_service.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("tessera_descriptor.bin"), descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migration files; a new file must rebuild the crate too.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
