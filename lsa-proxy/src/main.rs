//! `credguard-lsa-proxy`: serves the credguard API on a Unix socket.

fn main() -> std::process::ExitCode {
    credguard_lsa_proxy::cli::main_with_args(std::env::args_os())
}
