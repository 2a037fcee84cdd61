//! Compiles the `.proto` files with `protox` (pure Rust), so no `protoc` is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["credguard/enclave/v1/enclave.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let mut config = prost_build::Config::new();
    // BTreeMap keeps the generated code usable without std's HashMap.
    config.btree_map(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
