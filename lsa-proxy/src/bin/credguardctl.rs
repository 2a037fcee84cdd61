//! `credguardctl`: the command line for credguard's API.

fn main() -> std::process::ExitCode {
    credguard_lsa_proxy::ctl::main_with_args(std::env::args_os())
}
