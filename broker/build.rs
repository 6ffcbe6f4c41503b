//! Compiles the gRPC API in `proto/` with a pure-Rust protobuf compiler (protox), so that
//! building Tributary never needs a system `protoc`.

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/tributary/v1/common.proto",
    "proto/tributary/v1/broker.proto",
    "proto/tributary/v1/admin.proto",
    "proto/tributary/v1/replication.proto",
    "proto/tributary/v1/controller.proto",
    "proto/tributary/v1/group.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`, so record batches are sliced out of the
        // received buffer instead of copied.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
