//! `credguardctl`: the command line for credguard's API.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credguard_proto::lsa::lsa_client::LsaClient;
use credguard_proto::{enclave, lsa};
use serde_json::json;
use tonic::transport::Channel;
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
    /// The VMM's attestation public key (hex), used to check the enclave's sealing key before a
    /// secret is sealed to it (default: $CREDGUARD_ATTESTATION_PUB, else
    /// /etc/credguard/attestation.pub).
    #[arg(long, global = true)]
    attestation_pub: Option<PathBuf>,
    /// Seal secrets only to an enclave with this measurement (hex), in addition to checking the
    /// attestation signature.
    #[arg(long, global = true)]
    expect_measurement: Option<String>,
    /// The public key of the enclave image's signer (hex, as `credguard-image keygen` writes it):
    /// secrets are sealed only to an enclave whose attested signer is this key (default:
    /// $CREDGUARD_SIGNER_PUB, else /etc/credguard/signing.pub). Without it, --expect-measurement
    /// must pin the enclave.
    #[arg(long, global = true)]
    signer_pub: Option<PathBuf>,
    /// Seal secrets only to an enclave whose memory is hidden from the VMM (guest_memfd), as its
    /// attestation says.
    #[arg(long, global = true)]
    require_hidden_memory: bool,
    /// Seal secrets to a test build of the enclave too (tests only; also $CREDGUARD_ALLOW_TEST_IMAGE=1).
    #[arg(long, global = true)]
    allow_test_image: bool,
    /// Whether secrets are sealed to the enclave (so the proxy only relays ciphertext): `auto`
    /// seals whenever the attestation public key is installed (and then refuses to send a secret
    /// if the attestation does not verify); `require` refuses to send a secret unsealed; `never`
    /// sends it to the proxy, which wipes it after the forward.
    #[arg(long, global = true, value_enum, default_value_t = SealMode::Auto)]
    seal: SealMode,
    #[command(subcommand)]
    command: Cmd,
}

/// The names and the kind of secret of a credential (`logon`, `vault save`).
#[derive(clap::Args)]
struct CredentialArgs {
    /// NetBIOS domain (NTLM).
    #[arg(long, default_value = "")]
    domain: String,
    /// Kerberos realm.
    #[arg(long, default_value = "")]
    realm: String,
    /// KDC as host:port (for `vault save`: for the sessions made from it).
    #[arg(long, default_value = "")]
    kdc: String,
    /// The secret is an NT hash in hex, not a password.
    #[arg(long, conflicts_with = "key_enctype")]
    nt_hash: bool,
    /// The secret is a Kerberos key in hex, of this enctype (e.g. 18).
    #[arg(long)]
    key_enctype: Option<i32>,
    /// Never use rc4-hmac with this credential, even where the enclave image's policy allows it
    /// (sealed in with the secret: the proxy cannot change it).
    #[arg(long)]
    refuse_rc4: bool,
}

/// `--seal`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SealMode {
    Auto,
    Require,
    Never,
}

/// How `credguardctl` protects the secrets it sends (from the global flags).
struct SealPolicy {
    mode: SealMode,
    pub_path: PathBuf,
    signer_path: PathBuf,
    expect_measurement: Option<String>,
    require_hidden_memory: bool,
    allow_test_image: bool,
}

/// What a sealed secret is for: a logon, or a vault save under `target`.
enum Purpose<'a> {
    Logon,
    VaultSave {
        target: &'a str,
    },
    /// The new password of a session's password change.
    PasswordChange,
}

impl SealPolicy {
    fn of(cli: &Cli) -> Self {
        let path_of = |flag: &Option<PathBuf>, var: &str, default: &str| {
            flag.clone()
                .or_else(|| std::env::var_os(var).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(default))
        };
        SealPolicy {
            mode: cli.seal,
            pub_path: path_of(
                &cli.attestation_pub,
                "CREDGUARD_ATTESTATION_PUB",
                crate::sealed::DEFAULT_ATTESTATION_PUB,
            ),
            signer_path: path_of(
                &cli.signer_pub,
                "CREDGUARD_SIGNER_PUB",
                crate::sealed::DEFAULT_SIGNER_PUB,
            ),
            expect_measurement: cli.expect_measurement.clone(),
            require_hidden_memory: cli.require_hidden_memory,
            allow_test_image: cli.allow_test_image || std::env::var("CREDGUARD_ALLOW_TEST_IMAGE").as_deref() == Ok("1"),
        }
    }

    /// What this client requires of the enclave (reads the attestation and signer keys).
    fn expectations(&self) -> Result<crate::sealed::Expectations, crate::sealed::SealError> {
        let attestation_pub = crate::sealed::read_attestation_public_key(&self.pub_path)?;
        let signer = if self.signer_path.exists() {
            let key = crate::sealed::read_public_key(&self.signer_path)?;
            Some(crate::sealed::signer_fingerprint(&key))
        } else {
            None
        };
        Ok(crate::sealed::Expectations {
            attestation_pub,
            attestation_pub_path: self.pub_path.clone(),
            signer,
            signer_path: self.signer_path.clone(),
            measurement: self.expect_measurement.clone(),
            require_hidden_memory: self.require_hidden_memory,
            allow_test_image: self.allow_test_image,
        })
    }

    /// `secret` as it should go to the proxy for `user`/`domain`/`realm`: sealed to the attested
    /// enclave (for `purpose`, this client's uid and a fresh nonce) when the policy says so, else
    /// as it is.
    #[allow(clippy::too_many_arguments)]
    async fn protect(
        &self,
        c: &mut LsaClient<Channel>,
        secret: enclave::sealed_logon_secret::Secret,
        refuse_rc4: bool,
        purpose: Purpose<'_>,
        user: &str,
        domain: &str,
        realm: &str,
    ) -> Result<lsa::logon_request::Secret, Failure> {
        let seal = match self.mode {
            SealMode::Never => false,
            SealMode::Require => true,
            SealMode::Auto => self.pub_path.exists(),
        };
        if !seal {
            return Ok(secret.into());
        }
        let sealed = self.seal(c, secret, refuse_rc4, purpose, user, domain, realm).await?;
        Ok(lsa::logon_request::Secret::Sealed(sealed))
    }

    /// `secret` sealed to the attested enclave for `purpose`, this client's uid and a fresh nonce,
    /// whatever the policy's mode (a password change is never sent in the clear).
    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &self,
        c: &mut LsaClient<Channel>,
        secret: enclave::sealed_logon_secret::Secret,
        refuse_rc4: bool,
        purpose: Purpose<'_>,
        user: &str,
        domain: &str,
        realm: &str,
    ) -> Result<lsa::SealedSecret, Failure> {
        let expect = self.expectations().map_err(|e| Failure::Call(e.to_string()))?;
        let status = c.status(lsa::StatusRequest {}).await?.into_inner();
        if status.state != "ready" {
            // As the proxy would answer the logon itself.
            return Err(Failure::Call(
                "Unavailable: the enclave is not reachable (the proxy is reconnecting); retry shortly".into(),
            ));
        }
        let attested = crate::sealed::verify(&status, &expect).map_err(|e| Failure::Call(e.to_string()))?;
        let nonce = c.get_sealing_nonce(lsa::GetSealingNonceRequest {}).await?.into_inner();
        if nonce.boot_id != status.boot_id {
            return Err(Failure::Call(
                "Unavailable: the enclave restarted while sealing; retry".into(),
            ));
        }
        let (purpose, target) = match purpose {
            Purpose::Logon => (credguard_proto::attest::SealPurpose::Logon, ""),
            Purpose::VaultSave { target } => (credguard_proto::attest::SealPurpose::VaultSave, target),
            Purpose::PasswordChange => (credguard_proto::attest::SealPurpose::PasswordChange, ""),
        };
        let seal_for = crate::sealed::SealFor {
            purpose,
            owner: credguard_proto::attest::Owner::uid(own_uid()),
            sealing_nonce: &nonce.nonce,
            names: credguard_proto::attest::SealedNames {
                user,
                domain,
                realm,
                target,
            },
        };
        crate::sealed::seal(&attested.public_key, secret, refuse_rc4, &seal_for)
            .map_err(|e| Failure::Call(e.to_string()))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// State of credguard and its enclave.
    Status,
    /// Log on: the secret is read without echo from the terminal, or from stdin.
    Logon {
        /// User name (not with --saved).
        #[arg(required_unless_present = "saved")]
        user: Option<String>,
        /// Log on with the credential saved for this target (`vault save`) instead of a secret.
        #[arg(long, value_name = "TARGET", conflicts_with_all = ["user", "nt_hash", "key_enctype"])]
        saved: Option<String>,
        #[command(flatten)]
        cred: CredentialArgs,
        /// Make the new session your default (what your KCM credential cache and PAM use). This
        /// is what a logon does unless --no-default is given.
        #[arg(long, conflicts_with = "no_default")]
        default: bool,
        /// Keep your current default session; the new one becomes the default only if you have
        /// none.
        #[arg(long)]
        no_default: bool,
    },
    /// List logon sessions (yours; root sees all); `*` marks each uid's default session.
    Sessions,
    /// Show your default session (the one your KCM credential cache and PAM use; each logon
    /// becomes it), or make SESSION_ID the default.
    Default {
        /// The session to make the default.
        session_id: Option<String>,
    },
    /// Saved credentials, sealed by the enclave: save, list, delete (use: `logon --saved`).
    #[command(subcommand)]
    Vault(VaultCmd),
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
    /// Kerberos: change a session's expired password (kpasswd); the new password is read twice
    /// without echo from the terminal (or once from stdin) and sealed to the enclave.
    ChangePassword {
        /// The session id.
        session_id: String,
    },
    /// Kerberos: get a service ticket; prints the AP-REQ and GSS token (hex).
    KerberosTicket(TicketArgs),
    /// Kerberos mutual authentication: checks the service's AP-REP (hex) for the AP-REQ of
    /// `kerberos-ticket --mutual` named by its context id (hex), in the enclave.
    KerberosVerifyApRep {
        /// The session id.
        session_id: String,
        /// `context_id` of `kerberos-ticket --mutual --json`, hex.
        #[arg(long)]
        context_id_hex: String,
        /// The AP-REP (DER or its GSS token), hex.
        #[arg(long)]
        ap_rep_hex: String,
    },
    /// NTLMv2 client contexts: the NT hash stays in the enclave, messages are hex.
    #[command(subcommand)]
    Ntlm(NtlmCmd),
    /// Ask for a legacy protocol's response: always refused for credguard's protected credentials.
    LegacyAuthenticate(LegacyArgs),
    /// Register the host's machine account of a realm (root): its key is read from the host
    /// keytab and sealed to the enclave, which uses its TGT only as the FAST armor of other
    /// sessions' AS exchanges (`[kerberos.realms."R"] fast`). Log the session off to unregister.
    MachineAccount {
        /// The realm.
        #[arg(long)]
        realm: String,
        /// The machine principal, e.g. `host/client.example.test` or `CLIENT$`.
        #[arg(long)]
        principal: String,
        /// The keytab holding its key.
        #[arg(long, default_value = "/etc/krb5.keytab")]
        keytab: PathBuf,
    },
}

/// `credguardctl kerberos-ticket`.
#[derive(clap::Args)]
struct TicketArgs {
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
    /// Also write the service ticket (only it, never a TGT) into this MIT ccache file
    /// (`FILE:` prefix optional), as you, mode 0600, replacing it atomically.
    #[arg(long, default_value = "")]
    ccache: String,
    /// gss_channel_bindings_struct, hex (optional): its MD5 goes into the AP-REQ's checksum.
    #[arg(long, default_value = "")]
    channel_bindings_hex: String,
}

/// `credguardctl legacy-authenticate`.
#[derive(clap::Args)]
struct LegacyArgs {
    /// The session id.
    session_id: String,
    /// The protocol.
    #[arg(long, value_enum)]
    protocol: LegacyArg,
    /// The protocol's challenge, hex.
    #[arg(long, default_value = "")]
    challenge_hex: String,
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
        /// The NEGOTIATE message actually sent, hex (optional): the MIC then covers it instead
        /// of the one `ntlm negotiate` printed.
        #[arg(long, default_value = "")]
        negotiate_hex: String,
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

/// `DOMAIN\user (REALM)`, leaving out what is empty.
fn display_user(user: &str, domain: &str, realm: &str) -> String {
    let mut who = user.to_owned();
    if !domain.is_empty() {
        who = format!("{domain}\\{who}");
    }
    if !realm.is_empty() {
        who = format!("{who} ({realm})");
    }
    who
}

/// Reads the secret of a logon (a password, or with the flags an NT hash or a key in hex).
fn read_logon_secret(
    user: &str,
    nt_hash: bool,
    key_enctype: Option<i32>,
) -> Result<enclave::sealed_logon_secret::Secret, Failure> {
    use enclave::sealed_logon_secret::Secret as S;
    Ok(if nt_hash {
        let s = read_secret("NT hash (hex): ")?;
        S::NtHash(decode_hex_secret(&s, "NT hash")?)
    } else if let Some(enctype) = key_enctype {
        let s = read_secret("key (hex): ")?;
        S::Key(enclave::Key {
            enctype,
            value: decode_hex_secret(&s, "key")?,
        })
    } else {
        let s = read_secret(&format!("password for {user}: "))?;
        S::Password(s.as_str().to_owned())
    })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let policy = SealPolicy::of(&cli);
    let path = crate::socket_path(cli.socket.as_deref());
    let mut c = crate::connect(&path)
        .await
        .map_err(|e| Failure::Call(format!("cannot connect to {}: {e}", path.display())))?;
    let c = &mut c;
    let json = cli.json;
    match cli.command {
        Cmd::Status => status(c, &policy, json).await,
        Cmd::Logon {
            saved: Some(target), ..
        } => logon_saved(c, target, json).await,
        Cmd::Logon {
            user,
            saved: None,
            cred,
            no_default,
            ..
        } => logon(c, &policy, user.unwrap_or_default(), cred, !no_default, json).await,
        Cmd::Vault(cmd) => vault(c, &policy, cmd, json).await,
        Cmd::Sessions => sessions(c, json).await,
        Cmd::Default { session_id } => default_session(c, session_id, json).await,
        Cmd::KerberosTgt { session_id } => kerberos_tgt(c, session_id, json).await,
        Cmd::KerberosTicket(args) => kerberos_ticket(c, args, json).await,
        Cmd::KerberosVerifyApRep {
            session_id,
            context_id_hex,
            ap_rep_hex,
        } => verify_ap_rep(c, session_id, &context_id_hex, &ap_rep_hex, json).await,
        Cmd::ChangePassword { session_id } => change_password(c, &policy, session_id, json).await,
        Cmd::Logoff { session_id } => {
            c.logoff(lsa::LogoffRequest { session_id }).await?;
            if json {
                println!("{}", json!({}));
            }
            Ok(())
        }
        Cmd::Ntlm(cmd) => ntlm(c, cmd, json).await,
        Cmd::MachineAccount {
            realm,
            principal,
            keytab,
        } => machine_account(c, &policy, (realm, principal), &keytab, json).await,
        Cmd::LegacyAuthenticate(args) => legacy_authenticate(c, args, json).await,
    }
}

/// `credguardctl status`: the proxy's and the enclave's state, and whether this client can trust
/// the enclave's sealing key.
async fn status(c: &mut LsaClient<Channel>, policy: &SealPolicy, as_json: bool) -> Result<(), Failure> {
    let s = c.status(lsa::StatusRequest {}).await?.into_inner();
    let attestation = attestation_verdict(&s, policy);
    if as_json {
        println!(
            "{}",
            json!({"version": s.version, "measurement": s.measurement, "signer": s.signer,
                   "state": s.state, "uptime_ms": s.uptime_ms, "sessions": s.sessions,
                   "enclave_version": s.enclave_version, "protection": s.protection,
                   "boot_id": hex::encode(&s.boot_id),
                   "enclave_public_key": hex::encode(&s.enclave_public_key),
                   "attestation": attestation,
                   "enclave_restarts": s.enclave_restarts,
                   "enclave_restart_reasons": s.enclave_restart_reasons,
                   "vault_ready": s.vault_ready, "rc4_allowed": s.rc4_allowed,
                   "test_image": s.test_image, "memory_hidden": s.memory_hidden,
                   "proxy_protection": s.proxy_protection})
        );
        return Ok(());
    }
    println!("state:       {}", s.state);
    println!("version:     {}", s.version);
    if s.enclave_version.is_empty() {
        // The enclave is not answering: the proxy knows nothing about it right now.
        println!("enclave:     not reachable (the proxy is reconnecting)");
    } else {
        print_enclave_status(&s, &attestation);
    }
    println!("sessions:    {}", s.sessions);
    println!("proxy:       {}", s.proxy_protection);
    Ok(())
}

/// Whether the enclave's sealing key verifies against the installed attestation public key,
/// when there is one.
fn attestation_verdict(s: &lsa::StatusReply, policy: &SealPolicy) -> String {
    if s.enclave_public_key.is_empty() {
        return "none".to_string();
    }
    if s.attestation_signature.is_empty() {
        return "unsigned (the VMM has no attestation key)".to_string();
    }
    match policy.expectations() {
        Err(e) => format!("not checked ({e})"),
        Ok(expect) => match crate::sealed::verify(s, &expect) {
            Ok(_) => format!("verified with {}", policy.pub_path.display()),
            Err(e) => format!("FAILED: {e}"),
        },
    }
}

/// The enclave's part of `credguardctl status`, as text.
fn print_enclave_status(s: &lsa::StatusReply, attestation: &str) {
    println!("enclave:     {}", s.enclave_version);
    println!("measurement: {}", s.measurement);
    println!("signer:      {}", s.signer);
    println!("boot:        {}", hex::encode(&s.boot_id));
    println!("uptime:      {:.1} s", s.uptime_ms as f64 / 1000.0);
    println!("protection:  {}", s.protection);
    println!(
        "policy:      rc4-hmac {}{}",
        if s.rc4_allowed { "allowed" } else { "refused" },
        if s.test_image {
            "; TEST BUILD (never seal production secrets to it)"
        } else {
            ""
        }
    );
    println!("sealing key: {}", hex::encode(&s.enclave_public_key));
    println!("attestation: {attestation}");
    println!(
        "vault:       {}",
        if s.vault_ready {
            "ready"
        } else {
            "unavailable (no sealing secret)"
        }
    );
    println!("restarts:    {}", s.enclave_restarts);
    for reason in &s.enclave_restart_reasons {
        println!("  - {reason}");
    }
}

/// `credguardctl logon USER`: reads the secret, seals it when the policy says so, logs on.
async fn logon(
    c: &mut LsaClient<Channel>,
    policy: &SealPolicy,
    user: String,
    cred: CredentialArgs,
    make_default: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let CredentialArgs {
        domain,
        realm,
        kdc,
        nt_hash,
        key_enctype,
        refuse_rc4,
    } = cred;
    let secret = read_logon_secret(&user, nt_hash, key_enctype)?;
    let secret = policy
        .protect(c, secret, refuse_rc4, Purpose::Logon, &user, &domain, &realm)
        .await?;
    let req = lsa::LogonRequest {
        user,
        domain,
        realm,
        kdc,
        secret: Some(secret),
        keep_default: !make_default,
        machine_account: false,
    };
    // tonic encodes the request and drops it; the proxy and the enclave wipe their copies.
    let r = c.logon(req).await?.into_inner();
    if as_json {
        let is_default = make_default || is_default_session(c, &r.session_id).await?;
        println!("{}", json!({"session_id": r.session_id, "default": is_default}));
    } else {
        println!("{}", r.session_id);
    }
    Ok(())
}

/// `credguardctl machine-account`: the machine principal's strongest key from the keytab, always
/// sealed (the proxy never sees it), logged on as the realm's machine account.
async fn machine_account(
    c: &mut LsaClient<Channel>,
    policy: &SealPolicy,
    (realm, principal): (String, String),
    keytab: &std::path::Path,
    as_json: bool,
) -> Result<(), Failure> {
    let bytes = Zeroizing::new(
        std::fs::read(keytab).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", keytab.display())))?,
    );
    let key = crate::keytab::find_key(&bytes, &format!("{principal}@{realm}"))
        .map_err(|e| Failure::Usage(format!("{}: {e}", keytab.display())))?;
    let secret = enclave::sealed_logon_secret::Secret::Key(enclave::Key {
        enctype: key.enctype,
        value: key.value.to_vec(),
    });
    let sealed = policy
        .seal(c, secret, true, Purpose::Logon, &principal, "", &realm)
        .await?;
    let req = lsa::LogonRequest {
        user: principal,
        realm,
        secret: Some(lsa::logon_request::Secret::Sealed(sealed)),
        keep_default: true,
        machine_account: true,
        ..Default::default()
    };
    let r = c.logon(req).await?.into_inner();
    if as_json {
        println!(
            "{}",
            json!({"session_id": r.session_id, "enctype": key.enctype, "kvno": key.kvno})
        );
    } else {
        println!("{}", r.session_id);
    }
    Ok(())
}

/// The new password, twice without echo from a terminal (they must match), or once from stdin.
fn read_new_password() -> Result<Zeroizing<String>, Failure> {
    let first = read_secret("New password: ")?;
    if std::io::stdin().is_terminal() {
        let again = read_secret("New password again: ")?;
        if *again != *first {
            return Err(Failure::Usage("the two new passwords differ: nothing changed".into()));
        }
    }
    if first.is_empty() {
        return Err(Failure::Usage("the new password is empty".into()));
    }
    Ok(first)
}

/// `credguardctl change-password SESSION`: seals the new password for the session's names and
/// has the proxy carry the enclave's change over kpasswd.
async fn change_password(
    c: &mut LsaClient<Channel>,
    policy: &SealPolicy,
    session_id: String,
    as_json: bool,
) -> Result<(), Failure> {
    let sessions = c.list_sessions(lsa::ListSessionsRequest {}).await?.into_inner();
    let Some(s) = sessions.sessions.into_iter().find(|s| s.session_id == session_id) else {
        return Err(Failure::Call(format!(
            "NotFound: no session {session_id:?} of this user"
        )));
    };
    let password = read_new_password()?;
    let secret = enclave::sealed_logon_secret::Secret::Password(String::from(password.as_str()));
    let sealed = policy
        .seal(c, secret, false, Purpose::PasswordChange, &s.user, &s.domain, &s.realm)
        .await?;
    c.change_password(lsa::ChangePasswordRequest {
        session_id,
        new_password: Some(sealed),
        check_only: false,
    })
    .await?;
    if as_json {
        println!("{}", json!({"changed": true}));
    } else {
        println!("password changed");
    }
    Ok(())
}

/// `credguardctl sessions`.
async fn sessions(c: &mut LsaClient<Channel>, as_json: bool) -> Result<(), Failure> {
    let r = c.list_sessions(lsa::ListSessionsRequest {}).await?.into_inner();
    if as_json {
        let v: Vec<_> = r
            .sessions
            .iter()
            .map(|s| {
                json!({"session_id": s.session_id, "user": s.user, "domain": s.domain, "realm": s.realm,
                       "uid": s.uid, "created_unix_ms": s.created_unix_ms, "secret_kind": s.secret_kind,
                       "sealed": s.sealed, "default": s.is_default, "user_sid": s.user_sid})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!("  {:<32}  {:>6}  {:<10}  user", "session", "uid", "kind");
        for s in r.sessions {
            let who = display_user(&s.user, &s.domain, &s.realm);
            let mark = if s.is_default { '*' } else { ' ' };
            // The SID once a TGT has shown one (Active Directory).
            let sid = if s.user_sid.is_empty() {
                String::new()
            } else {
                format!("  {}", s.user_sid)
            };
            println!(
                "{mark} {:<32}  {:>6}  {:<10}  {who}{sid}",
                s.session_id, s.uid, s.secret_kind
            );
        }
    }
    Ok(())
}

/// This process's real uid: who the proxy sees (SO_PEERCRED).
fn own_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// `credguardctl default [SESSION_ID]`.
async fn default_session(c: &mut LsaClient<Channel>, session_id: Option<String>, as_json: bool) -> Result<(), Failure> {
    if let Some(session_id) = session_id {
        c.set_default_session(lsa::SetDefaultSessionRequest { session_id })
            .await?;
    }
    let sessions = c
        .list_sessions(lsa::ListSessionsRequest {})
        .await?
        .into_inner()
        .sessions;
    // Root lists every uid's sessions; its own default is the one with its uid.
    let me = own_uid();
    let default = sessions.iter().find(|s| s.is_default && s.uid == me);
    match (default, as_json) {
        (Some(s), true) => println!(
            "{}",
            json!({"session_id": s.session_id, "user": s.user, "realm": s.realm})
        ),
        (Some(s), false) => println!("{}", s.session_id),
        (None, true) => println!("{}", json!({"session_id": null})),
        (None, false) => eprintln!("no default session: log on with `credguardctl logon`"),
    }
    Ok(())
}

/// `credguardctl kerberos-tgt`.
async fn kerberos_tgt(c: &mut LsaClient<Channel>, session_id: String, as_json: bool) -> Result<(), Failure> {
    let r = c
        .kerberos_get_tgt(lsa::KerberosGetTgtRequest { session_id })
        .await?
        .into_inner();
    if as_json {
        println!(
            "{}",
            json!({"client_principal": r.client_principal, "realm": r.realm, "enctype": r.enctype,
                   "start_time": r.start_time, "end_time": r.end_time, "renew_till": r.renew_till,
                   "user_sid": r.user_sid})
        );
    } else {
        println!("principal: {} (enctype {})", r.client_principal, r.enctype);
        println!("valid:     {} .. {}", r.start_time, r.end_time);
        if !r.user_sid.is_empty() {
            println!("user SID:  {}", r.user_sid);
        }
    }
    Ok(())
}

/// `credguardctl kerberos-ticket`; with `--ccache`, also writes the ticket's ccache there.
async fn kerberos_ticket(c: &mut LsaClient<Channel>, args: TicketArgs, as_json: bool) -> Result<(), Failure> {
    let req = lsa::KerberosGetServiceTicketRequest {
        session_id: args.session_id,
        spn: args.spn,
        delegate: args.delegate,
        mutual: args.mutual,
        ccache_path: String::new(),
        channel_bindings: decode_hex(&args.channel_bindings_hex, "channel-bindings-hex")?,
    };
    let r = c.kerberos_get_service_ticket(req).await?.into_inner();
    if !args.ccache.is_empty() {
        // Written here, with this process's rights: the proxy opens no file for a caller.
        crate::ccache_file::write_ccache(crate::ccache_file::ccache_path(&args.ccache), &r.ccache)
            .map_err(|e| Failure::Call(e.to_string()))?;
    }
    if as_json {
        println!(
            "{}",
            json!({"ap_req": hex::encode(&r.ap_req), "gss_token": hex::encode(&r.gss_token),
                   "ticket": hex::encode(&r.ticket), "session_key": hex::encode(&r.session_key),
                   "enctype": r.enctype, "end_time": r.end_time, "subkey": hex::encode(&r.subkey),
                   "seq_number": r.seq_number, "context_id": hex::encode(&r.context_id),
                   "spnego_token": hex::encode(&r.spnego_token),
                   "from_cache": r.from_cache})
        );
    } else {
        println!("{}", hex::encode(&r.gss_token));
    }
    Ok(())
}

/// `credguardctl kerberos-verify-ap-rep`.
async fn verify_ap_rep(
    c: &mut LsaClient<Channel>,
    session_id: String,
    context_id_hex: &str,
    ap_rep_hex: &str,
    as_json: bool,
) -> Result<(), Failure> {
    let req = lsa::KerberosVerifyApRepRequest {
        session_id,
        context_id: decode_hex(context_id_hex, "context-id-hex")?,
        ap_rep: decode_hex(ap_rep_hex, "ap-rep-hex")?,
    };
    let r = c.kerberos_verify_ap_rep(req).await?.into_inner();
    let seq = r.has_seq_number.then_some(r.seq_number);
    if as_json {
        println!(
            "{}",
            json!({"verified": true, "acceptor_subkey": hex::encode(&r.acceptor_subkey),
                   "acceptor_subkey_enctype": r.acceptor_subkey_enctype, "seq_number": seq})
        );
    } else {
        println!("AP-REP verified: the service is who the ticket names");
    }
    Ok(())
}

/// `credguardctl ntlm ...`.
async fn ntlm(c: &mut LsaClient<Channel>, cmd: NtlmCmd, as_json: bool) -> Result<(), Failure> {
    match cmd {
        NtlmCmd::Negotiate { session_id } => {
            let r = c
                .ntlm_negotiate(lsa::NtlmNegotiateRequest { session_id })
                .await?
                .into_inner();
            let msg = hex::encode(&r.negotiate_message);
            if as_json {
                println!("{}", json!({"context_id": r.context_id, "negotiate_message": msg}));
            } else {
                println!("context_id:        {}", r.context_id);
                println!("negotiate_message: {msg}");
            }
        }
        NtlmCmd::Authenticate {
            context_id,
            challenge_hex,
            channel_bindings_hex,
            target_spn,
            negotiate_hex,
        } => {
            let req = lsa::NtlmAuthenticateRequest {
                context_id,
                challenge_message: decode_hex(&challenge_hex, "challenge-hex")?,
                channel_bindings: decode_hex(&channel_bindings_hex, "channel-bindings-hex")?,
                target_spn,
                negotiate_message: decode_hex(&negotiate_hex, "negotiate-hex")?,
            };
            let r = c.ntlm_authenticate(req).await?.into_inner();
            // The exported session key is this context's key, not a long-term secret.
            let (msg, key) = (
                hex::encode(&r.authenticate_message),
                Zeroizing::new(hex::encode(&r.exported_session_key)),
            );
            if as_json {
                println!(
                    "{}",
                    json!({"authenticate_message": msg, "exported_session_key": key.as_str()})
                );
            } else {
                println!("authenticate_message: {msg}");
                println!("exported_session_key: {}", key.as_str());
            }
        }
    }
    Ok(())
}

/// `credguardctl legacy-authenticate` (always refused for a protected credential).
async fn legacy_authenticate(c: &mut LsaClient<Channel>, args: LegacyArgs, as_json: bool) -> Result<(), Failure> {
    let req = lsa::LegacyAuthenticateRequest {
        session_id: args.session_id,
        protocol: args.protocol.to_proto() as i32,
        challenge: decode_hex(&args.challenge_hex, "challenge-hex")?,
    };
    let r = c.legacy_authenticate(req).await?.into_inner();
    let resp = hex::encode(&r.response);
    if as_json {
        println!("{}", json!({"response": resp}));
    } else {
        println!("{resp}");
    }
    Ok(())
}

/// `credguardctl vault ...`.
#[derive(Subcommand)]
enum VaultCmd {
    /// Save a credential under a target name (replacing one of the same target). The secret is
    /// read as for `logon` (without echo from a terminal, else from stdin) and stored only sealed
    /// by the enclave.
    Save {
        /// The name to save it under, e.g. a server name (1 to 256 bytes).
        target: String,
        /// User name.
        user: String,
        #[command(flatten)]
        cred: CredentialArgs,
    },
    /// List your saved credentials (root: everyone's); never a secret.
    List,
    /// Delete one of your saved credentials.
    Delete {
        /// Its target name.
        target: String,
    },
}

fn saved_json(i: &lsa::SavedCredentialInfo) -> serde_json::Value {
    json!({"target": i.target, "user": i.user, "domain": i.domain, "realm": i.realm, "kdc": i.kdc,
           "created_unix_ms": i.created_unix_ms, "secret_kind": i.secret_kind, "uid": i.uid})
}

async fn vault(c: &mut LsaClient<Channel>, policy: &SealPolicy, cmd: VaultCmd, as_json: bool) -> Result<(), Failure> {
    match cmd {
        VaultCmd::Save { target, user, cred } => vault_save(c, policy, target, user, cred, as_json).await,
        VaultCmd::List => {
            let r = c
                .list_saved_credentials(lsa::ListSavedCredentialsRequest {})
                .await?
                .into_inner();
            if as_json {
                let v: Vec<_> = r.credentials.iter().map(saved_json).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<32}  {:>6}  {:<8}  user", "target", "uid", "kind");
                for i in r.credentials {
                    let who = display_user(&i.user, &i.domain, &i.realm);
                    println!("{:<32}  {:>6}  {:<8}  {who}", i.target, i.uid, i.secret_kind);
                }
            }
            Ok(())
        }
        VaultCmd::Delete { target } => {
            c.delete_saved_credential(lsa::DeleteSavedCredentialRequest { target })
                .await?;
            if as_json {
                println!("{}", json!({}));
            }
            Ok(())
        }
    }
}

/// `credguardctl vault save`: reads the secret, seals it to the attested enclave when the policy
/// says so (as for `logon`), and has the enclave seal it for the vault.
async fn vault_save(
    c: &mut LsaClient<Channel>,
    policy: &SealPolicy,
    target: String,
    user: String,
    cred: CredentialArgs,
    as_json: bool,
) -> Result<(), Failure> {
    let CredentialArgs {
        domain,
        realm,
        kdc,
        nt_hash,
        key_enctype,
        refuse_rc4,
    } = cred;
    let secret = read_logon_secret(&user, nt_hash, key_enctype)?;
    let purpose = Purpose::VaultSave { target: &target };
    let secret = policy
        .protect(c, secret, refuse_rc4, purpose, &user, &domain, &realm)
        .await?;
    let req = lsa::SaveCredentialRequest {
        target,
        user,
        domain,
        realm,
        secret: Some(secret.into()),
        kdc,
    };
    // tonic encodes the request and drops it; the proxy and the enclave wipe their copies.
    let r = c.save_credential(req).await?.into_inner();
    let info = r.credential.unwrap_or_default();
    if as_json {
        println!("{}", saved_json(&info));
    } else {
        println!("saved {} ({}, {})", info.target, info.user, info.secret_kind);
    }
    Ok(())
}

/// `credguardctl logon --saved TARGET`.
/// Whether `session_id` is the caller's default session now.
async fn is_default_session(c: &mut LsaClient<Channel>, session_id: &str) -> Result<bool, Failure> {
    let sessions = c
        .list_sessions(lsa::ListSessionsRequest {})
        .await?
        .into_inner()
        .sessions;
    Ok(sessions.iter().any(|s| s.session_id == session_id && s.is_default))
}

async fn logon_saved(c: &mut LsaClient<Channel>, target: String, as_json: bool) -> Result<(), Failure> {
    let r = c.logon_saved(lsa::LogonSavedRequest { target }).await?.into_inner();
    if as_json {
        println!("{}", json!({"session_id": r.session_id}));
    } else {
        println!("{}", r.session_id);
    }
    Ok(())
}
