//! `credguard-lsa-proxy`: serves the credguard API on a Unix socket.

/// Freed memory keeps no secret (see the module's documentation).
#[global_allocator]
static ALLOC: credguard_lsa_proxy::wiping_alloc::WipingAllocator = credguard_lsa_proxy::wiping_alloc::WipingAllocator;

fn main() -> std::process::ExitCode {
    credguard_lsa_proxy::cli::main_with_args(std::env::args_os())
}
