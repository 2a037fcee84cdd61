//! Compiles the `.proto` files with `protox` (pure Rust), so no `protoc` is needed on the build machine,
//! and generates the enclave service's RPC code (see `build/micro_rpc.rs`).

#[path = "build/micro_rpc.rs"]
mod micro_rpc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build/micro_rpc.rs");
    const ENCLAVE: &str = "credguard/enclave/v1/enclave.proto";
    println!("cargo:rerun-if-changed={ENCLAVE}");
    let fds = protox::compile([ENCLAVE], ["."])?;
    let mut config = prost_build::Config::new();
    // BTreeMap keeps the generated code usable without std's HashMap (the enclave is no_std).
    config.btree_map(["."]);
    // Messages that carry secrets get a hand-written Debug that redacts them.
    config.skip_debug([
        "credguard.enclave.v1.LogonRequest",
        "credguard.enclave.v1.Key",
        "credguard.enclave.v1.SealedLogonSecret",
        "credguard.enclave.v1.VaultSealRequest",
    ]);
    config.service_generator(Box::new(micro_rpc::MicroRpc));
    config.compile_fds(fds)?;

    #[cfg(feature = "std")]
    vmm_status()?;

    #[cfg(feature = "grpc")]
    grpc()?;
    Ok(())
}

/// The VMM's own status message: host side only (the VMM and its clients), never in the enclave.
#[cfg(feature = "std")]
fn vmm_status() -> Result<(), Box<dyn std::error::Error>> {
    const VMM: &str = "credguard/vmm/v1/vmm.proto";
    println!("cargo:rerun-if-changed={VMM}");
    prost_build::Config::new().compile_fds(protox::compile([VMM], ["."])?)?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn grpc() -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message;
    const LSA: &str = "credguard/v1/lsa.proto";
    println!("cargo:rerun-if-changed={LSA}");
    let fds = protox::compile([LSA], ["."])?;
    // For gRPC reflection, so that grpcurl and other tools work without the .proto at hand.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("lsa_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Requests that carry secrets get a hand-written Debug that redacts them.
        .skip_debug([
            "credguard.v1.LogonRequest",
            "credguard.v1.Key",
            "credguard.v1.SaveCredentialRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
