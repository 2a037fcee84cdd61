//! The module's arguments, as a `pam.d` line gives them.

use std::path::PathBuf;

/// Where the installed module keeps its per-logon session counts (root only, 0700).
pub const DEFAULT_STATE_DIR: &str = "/run/credguard/pam";

/// The host keytab whose `host/<host name>` key proves the KDC genuine, when it exists.
pub const DEFAULT_KEYTAB: &str = "/etc/krb5.keytab";

/// How `auth` gets the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    /// Ask with the conversation function (no option).
    Ask,
    /// Use the password an earlier module got; ask if there is none (`try_first_pass`).
    Try,
    /// Use the password an earlier module got; fail if there is none (`use_first_pass`).
    Use,
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `use_first_pass` / `try_first_pass`.
    pub first_pass: FirstPass,
    /// `realm=`: the Kerberos realm of the principal (the PAM user name in it). Its KDCs come from
    /// the proxy's realm table. Empty: no Kerberos (an NTLM-only session, never checked).
    pub realm: String,
    /// `domain=`: the NetBIOS domain for NTLM (optional).
    pub domain: String,
    /// `socket=`: the API socket.
    pub socket: PathBuf,
    /// `attestation_pub=`: the VMM's attestation public key.
    pub attestation_pub: PathBuf,
    /// `signer_pub=`: the enclave image signer's public key (pinned when the file exists).
    pub signer_pub: PathBuf,
    /// `optional_kerberos`: succeed with the NTLM-only session when no KDC is reachable.
    pub optional_kerberos: bool,
    /// `state_dir=`: where the per-logon PAM session counts live.
    pub state_dir: PathBuf,
    /// `keytab=`: the host keytab. When it exists, the KDC must prove itself: the enclave's
    /// ticket to [`Options::verify_host`] must open with it (see `kdc_check`).
    pub keytab: PathBuf,
    /// `verify_host=`: the service whose ticket proves the KDC (default `host/<host name>`).
    pub verify_host: Option<String>,
    /// `use_authtok`: at `chauthtok`, take the new password from an earlier module of the
    /// `password` stack (`pam_pwquality`) instead of asking.
    pub use_authtok: bool,
    /// `debug`: log each step (never a secret) at LOG_DEBUG.
    pub debug: bool,
    /// Arguments the module does not know: logged, then ignored, as PAM modules do.
    pub unknown: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            first_pass: FirstPass::Ask,
            realm: String::new(),
            domain: String::new(),
            socket: PathBuf::from(credguard_client::DEFAULT_API_SOCKET),
            attestation_pub: PathBuf::from(credguard_client::sealed::DEFAULT_ATTESTATION_PUB),
            signer_pub: PathBuf::from(credguard_client::sealed::DEFAULT_SIGNER_PUB),
            optional_kerberos: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            keytab: PathBuf::from(DEFAULT_KEYTAB),
            verify_host: None,
            use_authtok: false,
            debug: false,
            unknown: Vec::new(),
        }
    }
}

impl Options {
    /// Parses the module's arguments. Never fails: what it does not understand (an unknown word,
    /// an empty path) goes to [`Options::unknown`] and the default stays.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Options {
        let mut o = Options::default();
        for arg in args {
            let arg = arg.as_ref();
            match arg.split_once('=') {
                None => match arg {
                    "use_first_pass" => o.first_pass = FirstPass::Use,
                    // use_first_pass wins over try_first_pass, whatever the order.
                    "try_first_pass" if o.first_pass != FirstPass::Use => o.first_pass = FirstPass::Try,
                    "try_first_pass" => {}
                    "optional_kerberos" => o.optional_kerberos = true,
                    "use_authtok" => o.use_authtok = true,
                    "debug" => o.debug = true,
                    _ => o.unknown.push(arg.to_owned()),
                },
                Some(("realm", v)) => o.realm = v.to_owned(),
                Some(("domain", v)) => o.domain = v.to_owned(),
                Some((key, v)) if !v.is_empty() => match key {
                    "socket" => o.socket = PathBuf::from(v),
                    "attestation_pub" => o.attestation_pub = PathBuf::from(v),
                    "signer_pub" => o.signer_pub = PathBuf::from(v),
                    "state_dir" => o.state_dir = PathBuf::from(v),
                    "keytab" => o.keytab = PathBuf::from(v),
                    "verify_host" => o.verify_host = Some(v.to_owned()),
                    _ => o.unknown.push(arg.to_owned()),
                },
                Some(_) => o.unknown.push(arg.to_owned()),
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_give_the_installed_defaults() {
        let o = Options::parse::<&str>(&[]);
        assert_eq!(o.first_pass, FirstPass::Ask);
        assert_eq!(o.socket, PathBuf::from("/run/credguard/lsa.sock"));
        assert_eq!(o.attestation_pub, PathBuf::from("/etc/credguard/attestation.pub"));
        assert_eq!(o.signer_pub, PathBuf::from("/etc/credguard/signing.pub"));
        assert_eq!(o.state_dir, PathBuf::from("/run/credguard/pam"));
        assert!(o.realm.is_empty() && !o.optional_kerberos && !o.debug && o.unknown.is_empty());
        assert!(!o.use_authtok);
    }

    #[test]
    fn every_option_is_read() {
        let o = Options::parse(&[
            "try_first_pass",
            "realm=EXAMPLE.TEST",
            "domain=EXAMPLE",
            "socket=/tmp/x/lsa.sock",
            "attestation_pub=/tmp/a.pub",
            "signer_pub=/tmp/s.pub",
            "state_dir=/tmp/state",
            "optional_kerberos",
            "use_authtok",
            "debug",
        ]);
        assert_eq!(o.first_pass, FirstPass::Try);
        assert_eq!(o.realm, "EXAMPLE.TEST");
        assert_eq!(o.domain, "EXAMPLE");
        assert_eq!(o.socket, PathBuf::from("/tmp/x/lsa.sock"));
        assert_eq!(o.attestation_pub, PathBuf::from("/tmp/a.pub"));
        assert_eq!(o.signer_pub, PathBuf::from("/tmp/s.pub"));
        assert_eq!(o.state_dir, PathBuf::from("/tmp/state"));
        assert!(o.optional_kerberos && o.debug && o.unknown.is_empty());
        assert!(o.use_authtok);
    }

    #[test]
    fn use_first_pass_wins_in_either_order() {
        assert_eq!(
            Options::parse(&["use_first_pass", "try_first_pass"]).first_pass,
            FirstPass::Use
        );
        assert_eq!(
            Options::parse(&["try_first_pass", "use_first_pass"]).first_pass,
            FirstPass::Use
        );
    }

    #[test]
    fn unknown_and_empty_arguments_are_kept_aside_and_change_nothing() {
        let o = Options::parse(&["nullok", "socket=", "colour=blue", "=x"]);
        assert_eq!(o.unknown, ["nullok", "socket=", "colour=blue", "=x"]);
        assert_eq!(o.socket, PathBuf::from("/run/credguard/lsa.sock"));
    }
}
