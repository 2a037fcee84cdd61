//! `credguardctl`: the command line for credguard's API.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::client;
use clap::{Parser, Subcommand};
use credguard_proto::lsa;
use serde_json::json;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "credguardctl", version, about = "Talk to credguard's LSA proxy")]
struct Cli {
    /// API socket (default: $CREDGUARD_SOCKET, else /run/credguard/lsa.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// State of credguard and its enclave.
    Status,
    /// Log on: the secret is read without echo from the terminal, or from stdin.
    Logon {
        /// User name.
        user: String,
        /// NetBIOS domain (NTLM).
        #[arg(long, default_value = "")]
        domain: String,
        /// Kerberos realm.
        #[arg(long, default_value = "")]
        realm: String,
        /// KDC as host:port.
        #[arg(long, default_value = "")]
        kdc: String,
        /// The secret is an NT hash in hex, not a password.
        #[arg(long, conflicts_with = "key_enctype")]
        nt_hash: bool,
        /// The secret is a Kerberos key in hex, of this enctype (e.g. 18).
        #[arg(long)]
        key_enctype: Option<i32>,
    },
    /// List logon sessions (yours; root sees all).
    Sessions,
    /// Close a logon session.
    Logoff {
        /// The session id.
        session_id: String,
    },
}

/// Runs `credguardctl` with `args` (the first is the program name).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credguardctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("credguardctl: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Call(m)) => {
            eprintln!("credguardctl: {m}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Call(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure::Call(format!("{:?}: {}", s.code(), s.message()))
    }
}

fn read_secret(prompt: &str) -> Result<Zeroizing<String>, Failure> {
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).map_err(|e| Failure::Usage(format!("cannot read the secret: {e}")))?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        s
    };
    let mut secret = Zeroizing::new(secret);
    // A trailing newline from `echo` or a file is not part of the secret.
    while secret.ends_with('\n') || secret.ends_with('\r') {
        secret.pop();
    }
    Ok(secret)
}

fn decode_hex_secret(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    hex::decode(s.trim()).map_err(|_| Failure::Usage(format!("the {what} must be hex")))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let path = client::socket_path(cli.socket.as_deref());
    let mut c = client::connect(&path)
        .await
        .map_err(|e| Failure::Call(format!("cannot connect to {}: {e}", path.display())))?;
    match cli.command {
        Cmd::Status => {
            let s = c.status(lsa::StatusRequest {}).await?.into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({"version": s.version, "measurement": s.measurement, "signer": s.signer,
                           "state": s.state, "uptime_ms": s.uptime_ms, "sessions": s.sessions,
                           "enclave_version": s.enclave_version})
                );
            } else {
                println!("state:       {}", s.state);
                println!("version:     {} (enclave {})", s.version, s.enclave_version);
                println!("measurement: {}", s.measurement);
                println!("signer:      {}", s.signer);
                println!("uptime:      {:.1} s", s.uptime_ms as f64 / 1000.0);
                println!("sessions:    {}", s.sessions);
            }
        }
        Cmd::Logon {
            user,
            domain,
            realm,
            kdc,
            nt_hash,
            key_enctype,
        } => {
            let secret = if nt_hash {
                let s = read_secret("NT hash (hex): ")?;
                lsa::logon_request::Secret::NtHash(decode_hex_secret(&s, "NT hash")?)
            } else if let Some(enctype) = key_enctype {
                let s = read_secret("key (hex): ")?;
                lsa::logon_request::Secret::Key(lsa::Key {
                    enctype,
                    value: decode_hex_secret(&s, "key")?,
                })
            } else {
                let s = read_secret(&format!("password for {user}: "))?;
                lsa::logon_request::Secret::Password(s.as_str().to_owned())
            };
            let req = lsa::LogonRequest {
                user,
                domain,
                realm,
                kdc,
                secret: Some(secret),
            };
            // tonic encodes the request and drops it; the proxy and the enclave wipe their copies.
            let r = c.logon(req).await?.into_inner();
            if cli.json {
                println!("{}", json!({"session_id": r.session_id}));
            } else {
                println!("{}", r.session_id);
            }
        }
        Cmd::Sessions => {
            let r = c.list_sessions(lsa::ListSessionsRequest {}).await?.into_inner();
            if cli.json {
                let v: Vec<_> = r
                    .sessions
                    .iter()
                    .map(|s| {
                        json!({"session_id": s.session_id, "user": s.user, "domain": s.domain, "realm": s.realm,
                               "uid": s.uid, "created_unix_ms": s.created_unix_ms, "secret_kind": s.secret_kind})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<32}  {:>6}  {:<10}  user", "session", "uid", "kind");
                for s in r.sessions {
                    let mut who = s.user.clone();
                    if !s.domain.is_empty() {
                        who = format!("{}\\{}", s.domain, who);
                    }
                    if !s.realm.is_empty() {
                        who = format!("{who} ({})", s.realm);
                    }
                    println!("{:<32}  {:>6}  {:<10}  {who}", s.session_id, s.uid, s.secret_kind);
                }
            }
        }
        Cmd::Logoff { session_id } => {
            c.logoff(lsa::LogoffRequest { session_id }).await?;
            if cli.json {
                println!("{}", json!({}));
            }
        }
    }
    Ok(())
}
