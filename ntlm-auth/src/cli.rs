//! The command line: Samba `ntlm_auth`'s, as its callers pass it (both `--flag value` and
//! `--flag=value`), plus `--socket`.
//!
//! - curl 7.88 (`lib/curl_ntlm_wb.c`): `--helper-protocol ntlmssp-client-1 --use-cached-creds
//!   --username USER [--domain DOMAIN]`;
//! - Firefox (`nsAuthSambaNTLM`): `--helper-protocol ntlmssp-client-1 --use-cached-creds
//!   --username $USER`;
//! - libsoup and Evolution: the same, with `--domain` when they know one.
//!
//! Samba's other options are accepted and ignored, so that no caller's habit makes the helper
//! fail; `--password` among them (credguard never takes one here).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::helper::Options;

/// The only helper protocol this helper speaks.
pub const CLIENT_PROTOCOL: &str = "ntlmssp-client-1";

/// The client side of Samba's ntlm_auth, answered from your credguard logon session: the NT hash
/// never leaves the enclave. Speaks `--helper-protocol=ntlmssp-client-1` on standard input and
/// output (YR, TT <base64> -> KK <base64>, BH <reason>).
#[derive(Debug, Parser)]
#[command(name = "credguard-ntlm-auth", version)]
pub struct Cli {
    /// The helper protocol; only ntlmssp-client-1 is served (any other gets BH for every line).
    #[arg(long, value_name = "PROTOCOL")]
    pub helper_protocol: String,
    /// Must name your credguard session's user (case-insensitive); DOMAIN\user also names the
    /// domain. Empty or absent: not checked.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Must name your credguard session's NetBIOS domain (case-insensitive).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// With --target-hostname, the service of the SPN sent as MsvAvTargetName (default host).
    #[arg(long, value_name = "SERVICE")]
    pub target_service: Option<String>,
    /// The server's host name: the SPN SERVICE/HOSTNAME is sent as MsvAvTargetName.
    #[arg(long, value_name = "HOSTNAME")]
    pub target_hostname: Option<String>,
    /// The credguard API socket (default $CREDGUARD_SOCKET, else /run/credguard/lsa.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Accepted for Samba's callers: the credentials are always credguard's session.
    #[arg(long)]
    pub use_cached_creds: bool,
    #[command(flatten)]
    ignored: Ignored,
}

/// Samba `ntlm_auth` options that mean nothing here.
#[derive(Debug, clap::Args)]
struct Ignored {
    /// Ignored: credguard takes no password here (log on with credguardctl).
    #[arg(long, hide = true)]
    password: Option<String>,
    /// Ignored: the workstation name is the proxy's ([ntlm] workstation).
    #[arg(long, hide = true)]
    workstation: Option<String>,
    #[arg(long, hide = true)]
    challenge: Option<String>,
    #[arg(long, hide = true)]
    lm_response: Option<String>,
    #[arg(long, hide = true)]
    nt_response: Option<String>,
    #[arg(long, hide = true)]
    require_membership_of: Option<String>,
    #[arg(long, hide = true)]
    pam_winbind_conf: Option<String>,
    #[arg(long, hide = true)]
    request_lm_key: bool,
    #[arg(long, hide = true)]
    request_nt_key: bool,
    #[arg(long, hide = true)]
    allow_mschapv2: bool,
    #[arg(long, hide = true)]
    offline_logon: bool,
    #[arg(long, hide = true)]
    diagnostics: bool,
    #[arg(long, hide = true)]
    debug_stdout: bool,
    #[arg(short = 'd', long = "debuglevel", hide = true)]
    debuglevel: Option<String>,
    #[arg(short = 's', long = "configfile", hide = true)]
    configfile: Option<String>,
    #[arg(short = 'l', long = "log-basename", hide = true)]
    log_basename: Option<String>,
    #[arg(long = "option", hide = true)]
    option: Vec<String>,
}

impl Cli {
    /// Parses `args` (the first is the program name).
    pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    /// What the helper does, for the caller of effective uid `uid`, with `CREDGUARD_SESSION`
    /// set to `session`.
    pub fn options(&self, uid: u32, session: Option<String>) -> Options {
        let unsupported = (self.helper_protocol != CLIENT_PROTOCOL).then(|| {
            format!(
                "credguard-ntlm-auth speaks only --helper-protocol={CLIENT_PROTOCOL}, not {:?}",
                self.helper_protocol
            )
        });
        let target_spn = match &self.target_hostname {
            Some(host) if !host.is_empty() => {
                let service = self.target_service.as_deref().filter(|s| !s.is_empty());
                format!("{}/{host}", service.unwrap_or("host"))
            }
            _ => String::new(),
        };
        Options {
            uid,
            session: session.filter(|s| !s.is_empty()),
            username: self.username.clone(),
            domain: self.domain.clone(),
            target_spn,
            unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(
            std::iter::once("ntlm_auth")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn the_callers_command_lines_parse() {
        // curl 7.88, with and without a domain; Firefox.
        for args in [
            &[
                "--helper-protocol",
                "ntlmssp-client-1",
                "--use-cached-creds",
                "--username",
                "alice",
            ][..],
            &[
                "--helper-protocol",
                "ntlmssp-client-1",
                "--use-cached-creds",
                "--username",
                "alice",
                "--domain",
                "CORP",
            ],
            &[
                "--helper-protocol=ntlmssp-client-1",
                "--use-cached-creds",
                "--username=alice",
                "--domain=CORP",
            ],
        ] {
            let cli = parse(args).unwrap();
            let o = cli.options(1000, None);
            assert_eq!(o.unsupported, None);
            assert_eq!(o.username.as_deref(), Some("alice"));
            assert_eq!(o.uid, 1000);
        }
    }

    #[test]
    fn samba_options_are_ignored_and_the_target_becomes_an_spn() {
        let cli = parse(&[
            "--helper-protocol=ntlmssp-client-1",
            "--password=hunter2",
            "--workstation",
            "WS",
            "-d10",
            "--option=client ntlmv2 auth=yes",
            "--option",
            "x=y",
            "-s",
            "/etc/samba/smb.conf",
            "--diagnostics",
            "--target-service=HTTP",
            "--target-hostname=web.corp.test",
        ])
        .unwrap();
        let o = cli.options(0, Some(String::new()));
        assert_eq!(o.target_spn, "HTTP/web.corp.test");
        assert_eq!(o.session, None);
        assert!(!format!("{o:?}").contains("hunter2"), "the password goes nowhere");
        let cli = parse(&["--helper-protocol=ntlmssp-client-1", "--target-hostname=h.test"]).unwrap();
        assert_eq!(cli.options(0, Some("s1".into())).target_spn, "host/h.test");
        assert_eq!(cli.options(0, Some("s1".into())).session.as_deref(), Some("s1"));
    }

    #[test]
    fn other_protocols_are_answered_bh_and_bad_command_lines_are_errors() {
        let cli = parse(&["--helper-protocol=squid-2.5-ntlmssp"]).unwrap();
        let why = cli.options(0, None).unsupported.unwrap();
        assert!(why.contains("only --helper-protocol=ntlmssp-client-1"), "{why}");
        assert!(parse(&[]).is_err(), "the protocol is required");
        assert!(parse(&["--helper-protocol=ntlmssp-client-1", "--no-such-flag"]).is_err());
    }
}
