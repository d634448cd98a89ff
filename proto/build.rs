//! Compiles `operon/v1/*.proto` with protox (pure Rust: no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        [
            "operon/v1/handler.proto",
            "operon/v1/sync.proto",
            "operon/v1/tasks.proto",
        ],
        ["."],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=operon");
    Ok(())
}
