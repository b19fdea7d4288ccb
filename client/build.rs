//! Compiles Tessera's AuthorizationService (client side only) from the repository's `proto/`
//! with protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["../proto/tessera/v1/authorization_service.proto"];
    let descriptors = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
