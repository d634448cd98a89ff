//! Compiles `operon/v1/*.proto` with protox (pure Rust: no system `protoc`), and writes the
//! encoded file descriptor set (`operon_descriptor.bin` in `OUT_DIR`) for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        [
            "operon/v1/handler.proto",
            "operon/v1/sync.proto",
            "operon/v1/tasks.proto",
        ],
        ["."],
    )?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("operon_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=operon");
    Ok(())
}
