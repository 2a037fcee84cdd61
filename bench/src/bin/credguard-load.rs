//! `credguard-load`: drives the API with N concurrent clients (mixed Status, Logon, ListSessions,
//! Logoff) for S seconds and reports throughput, p50/p99 per operation and errors by code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use credguard_bench::load::{LoadConfig, run};

#[derive(Parser)]
#[command(
    name = "credguard-load",
    version,
    about = "Load the credguard API with concurrent clients"
)]
struct Cli {
    /// API socket (default: $CREDGUARD_SOCKET, else /run/credguard/lsa.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credguard-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = LoadConfig {
        socket: credguard_client::socket_path(cli.socket.as_deref()),
        clients: usize::from(cli.clients),
        duration: Duration::from_secs(cli.seconds),
    };
    let report = rt.block_on(run(config));
    if cli.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
    }
    ExitCode::SUCCESS
}
