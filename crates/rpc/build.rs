//! Generates the node and raft services from proto/cairn (needs `protoc`:
//! `make` installs Debian's protobuf-compiler, or set PROTOC).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/cairn/node.proto",
        "../../proto/cairn/raft.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
