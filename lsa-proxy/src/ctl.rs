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
    /// Kerberos: get a TGT for a session (it stays in the enclave; prints facts about it).
    KerberosTgt {
        /// The session id.
        session_id: String,
    },
    /// Kerberos: get a service ticket; prints the AP-REQ and GSS token (hex).
    KerberosTicket {
        /// The session id.
        session_id: String,
        /// Service principal name, e.g. host/svc.example.test or HTTP@web.example.test.
        spn: String,
        /// Ask for mutual authentication.
        #[arg(long)]
        mutual: bool,
        /// Ask for delegation (always refused: shown for completeness).
        #[arg(long)]
        delegate: bool,
        /// Also write the service ticket into this MIT ccache file.
        #[arg(long, default_value = "")]
        ccache: String,
    },
    /// NTLMv2 client contexts: the NT hash stays in the enclave, messages are hex.
    #[command(subcommand)]
    Ntlm(NtlmCmd),
    /// Ask for a legacy protocol's response: always refused for credguard's protected credentials.
    LegacyAuthenticate {
        /// The session id.
        session_id: String,
        /// The protocol.
        #[arg(long, value_enum)]
        protocol: LegacyArg,
        /// The protocol's challenge, hex.
        #[arg(long, default_value = "")]
        challenge_hex: String,
    },
}

/// `credguardctl ntlm ...`.
#[derive(Subcommand)]
enum NtlmCmd {
    /// Start a context for a session: prints its id and the NEGOTIATE message (hex).
    Negotiate {
        /// The session id.
        session_id: String,
    },
    /// Answer the server's CHALLENGE: prints the AUTHENTICATE message and the exported session key (hex).
    Authenticate {
        /// The context id from `ntlm negotiate`.
        context_id: String,
        /// The server's CHALLENGE message, hex.
        #[arg(long)]
        challenge_hex: String,
        /// gss_channel_bindings_struct, hex (optional).
        #[arg(long, default_value = "")]
        channel_bindings_hex: String,
        /// Target SPN (optional), e.g. HTTP/web.example.test.
        #[arg(long, default_value = "")]
        target_spn: String,
    },
}

/// Legacy protocols, as `--protocol` takes them.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LegacyArg {
    Ntlmv1,
    Mschapv2,
    Digest,
    Credssp,
}

impl LegacyArg {
    fn to_proto(self) -> lsa::LegacyProtocol {
        match self {
            LegacyArg::Ntlmv1 => lsa::LegacyProtocol::Ntlmv1,
            LegacyArg::Mschapv2 => lsa::LegacyProtocol::Mschapv2,
            LegacyArg::Digest => lsa::LegacyProtocol::Digest,
            LegacyArg::Credssp => lsa::LegacyProtocol::Credssp,
        }
    }
}

fn decode_hex(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    hex::decode(s.trim()).map_err(|_| Failure::Usage(format!("--{what} must be hex")))
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
                           "enclave_version": s.enclave_version, "protection": s.protection})
                );
            } else {
                println!("state:       {}", s.state);
                println!("version:     {}", s.version);
                if s.enclave_version.is_empty() {
                    // The enclave is not answering: the proxy knows nothing about it right now.
                    println!("enclave:     not reachable (the proxy is reconnecting)");
                } else {
                    println!("enclave:     {}", s.enclave_version);
                    println!("measurement: {}", s.measurement);
                    println!("signer:      {}", s.signer);
                    println!("uptime:      {:.1} s", s.uptime_ms as f64 / 1000.0);
                    println!("protection:  {}", s.protection);
                }
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
        Cmd::KerberosTgt { session_id } => {
            let r = c
                .kerberos_get_tgt(lsa::KerberosGetTgtRequest { session_id })
                .await?
                .into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({"client_principal": r.client_principal, "realm": r.realm, "enctype": r.enctype,
                           "start_time": r.start_time, "end_time": r.end_time, "renew_till": r.renew_till})
                );
            } else {
                println!("principal: {} (enctype {})", r.client_principal, r.enctype);
                println!("valid:     {} .. {}", r.start_time, r.end_time);
            }
        }
        Cmd::KerberosTicket {
            session_id,
            spn,
            mutual,
            delegate,
            ccache,
        } => {
            let ccache_path = if ccache.is_empty() {
                String::new()
            } else {
                // The proxy needs an absolute path; it writes the file as the caller.
                std::path::absolute(&ccache)
                    .map_err(|e| Failure::Usage(format!("bad --ccache path: {e}")))?
                    .to_string_lossy()
                    .into_owned()
            };
            let r = c
                .kerberos_get_service_ticket(lsa::KerberosGetServiceTicketRequest {
                    session_id,
                    spn,
                    delegate,
                    mutual,
                    ccache_path,
                })
                .await?
                .into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({"ap_req": hex::encode(&r.ap_req), "gss_token": hex::encode(&r.gss_token),
                           "ticket": hex::encode(&r.ticket), "session_key": hex::encode(&r.session_key),
                           "enctype": r.enctype, "end_time": r.end_time})
                );
            } else {
                println!("{}", hex::encode(&r.gss_token));
            }
        }
        Cmd::Logoff { session_id } => {
            c.logoff(lsa::LogoffRequest { session_id }).await?;
            if cli.json {
                println!("{}", json!({}));
            }
        }
        Cmd::Ntlm(NtlmCmd::Negotiate { session_id }) => {
            let r = c
                .ntlm_negotiate(lsa::NtlmNegotiateRequest { session_id })
                .await?
                .into_inner();
            let msg = hex::encode(&r.negotiate_message);
            if cli.json {
                println!("{}", json!({"context_id": r.context_id, "negotiate_message": msg}));
            } else {
                println!("context_id:        {}", r.context_id);
                println!("negotiate_message: {msg}");
            }
        }
        Cmd::Ntlm(NtlmCmd::Authenticate {
            context_id,
            challenge_hex,
            channel_bindings_hex,
            target_spn,
        }) => {
            let req = lsa::NtlmAuthenticateRequest {
                context_id,
                challenge_message: decode_hex(&challenge_hex, "challenge-hex")?,
                channel_bindings: decode_hex(&channel_bindings_hex, "channel-bindings-hex")?,
                target_spn,
            };
            let r = c.ntlm_authenticate(req).await?.into_inner();
            // The exported session key is this context's key, not a long-term secret.
            let (msg, key) = (
                hex::encode(&r.authenticate_message),
                Zeroizing::new(hex::encode(&r.exported_session_key)),
            );
            if cli.json {
                println!(
                    "{}",
                    json!({"authenticate_message": msg, "exported_session_key": key.as_str()})
                );
            } else {
                println!("authenticate_message: {msg}");
                println!("exported_session_key: {}", key.as_str());
            }
        }
        Cmd::LegacyAuthenticate {
            session_id,
            protocol,
            challenge_hex,
        } => {
            let req = lsa::LegacyAuthenticateRequest {
                session_id,
                protocol: protocol.to_proto() as i32,
                challenge: decode_hex(&challenge_hex, "challenge-hex")?,
            };
            let r = c.legacy_authenticate(req).await?.into_inner();
            let resp = hex::encode(&r.response);
            if cli.json {
                println!("{}", json!({"response": resp}));
            } else {
                println!("{resp}");
            }
        }
    }
    Ok(())
}
