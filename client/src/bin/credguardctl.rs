//! `credguardctl`: the command line for credguard's API.

fn main() -> std::process::ExitCode {
    credguard_client::ctl::main_with_args(std::env::args_os())
}
