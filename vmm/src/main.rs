//! `credguard-vmm`: verify and run credguard's enclave. See [`credguard_vmm::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    credguard_vmm::cli::main_with_args(std::env::args_os())
}
