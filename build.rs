//! Compiles `proto/` with protox (pure Rust), so a fresh machine needs no `protoc`.
//!
//! Two descriptor sets are written for gRPC server reflection: Tessera's own, and Envoy's
//! `envoy/service/auth/v3/external_auth.proto` with its imports. envoy-types ships Envoy's set
//! (`src/generated/types.bin`, 3.3 MB) but exposes no API for it, so its folder is found with
//! `cargo metadata` and the set is cut down to the files that service needs. The files are
//! copied byte for byte (not decoded and re-encoded), so custom options survive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The Envoy file reflection must describe; its imports follow.
const ENVOY_SERVICE_FILE: &str = "envoy/service/auth/v3/external_auth.proto";

fn main() -> BuildResult<()> {
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
        // Buffers sized for Tessera's messages rather than tonic's 8 KiB (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ProstCodec")
        .compile_fds(descriptors)?;

    let envoy_set = envoy_types_descriptor_set()?;
    println!("cargo:rerun-if-changed={}", envoy_set.display());
    let envoy_files = std::fs::read(&envoy_set)?;
    let needed = files_needed_by(ENVOY_SERVICE_FILE, &envoy_files)?;
    std::fs::write(out_dir.join("envoy_descriptor.bin"), needed)?;

    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migration files; a new file must rebuild the crate too.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}

/// `src/generated/types.bin` of the envoy-types package this build resolved.
fn envoy_types_descriptor_set() -> BuildResult<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    // Offline and for this build's target only: cargo has downloaded exactly the packages this
    // target needs, and a full resolve would ask for other platforms' (android_system_properties,
    // …) that a fresh machine never fetched.
    let target = std::env::var("TARGET")?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &target])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == "envoy-types")
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or("envoy-types is not among the dependencies")?;
    let folder = Path::new(manifest_path)
        .parent()
        .ok_or("envoy-types has no folder")?;
    Ok(folder.join("src/generated/types.bin"))
}

/// The encoded `FileDescriptorSet` holding `root` and everything it imports, transitively.
fn files_needed_by(root: &str, encoded_set: &[u8]) -> BuildResult<Vec<u8>> {
    let mut by_name: BTreeMap<String, (&[u8], Vec<String>)> = BTreeMap::new();
    for raw in set_entries(encoded_set)? {
        let file: prost_types::FileDescriptorProto = prost::Message::decode(raw)?;
        by_name.insert(file.name().to_owned(), (raw, file.dependency));
    }
    let mut needed = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(name) = pending.pop() {
        if !needed.insert(name.clone()) {
            continue;
        }
        let (_, imports) = by_name
            .get(&name)
            .ok_or_else(|| format!("{name} is missing from envoy-types' descriptor set"))?;
        pending.extend(imports.iter().cloned());
    }
    let mut out = Vec::new();
    for name in &needed {
        let (raw, _) = &by_name[name];
        // Field 1 (`file`), wire type 2 (length-delimited): tag byte 0x0a, length, bytes.
        out.push(0x0a);
        prost::encoding::encode_varint(raw.len() as u64, &mut out);
        out.extend_from_slice(raw);
    }
    Ok(out)
}

/// The raw bytes of each `file` entry of an encoded `FileDescriptorSet`.
fn set_entries(mut encoded: &[u8]) -> BuildResult<Vec<&[u8]>> {
    let mut entries = Vec::new();
    while !encoded.is_empty() {
        let key = prost::encoding::decode_varint(&mut encoded)?;
        if key != 0x0a {
            return Err(format!("unexpected field key {key} in a FileDescriptorSet").into());
        }
        let length = usize::try_from(prost::encoding::decode_varint(&mut encoded)?)?;
        if length > encoded.len() {
            return Err("truncated FileDescriptorSet".into());
        }
        let (entry, rest) = encoded.split_at(length);
        entries.push(entry);
        encoded = rest;
    }
    Ok(entries)
}
