//! The proxy's configuration file (TOML). Every key is optional; the defaults are the production
//! paths. `scripts/credguard.toml` is the documented example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default API socket.
pub const DEFAULT_API_SOCKET: &str = "/run/credguard/lsa.sock";
/// Default socket of the VMM's hybrid vsock.
pub const DEFAULT_VMM_SOCKET: &str = "/run/credguard-vmm/vsock.sock";

/// Default rate limit of secret-using operations per session and second: far above what one
/// interactive user or service needs, far below what makes the enclave a useful oracle.
pub const DEFAULT_OPERATIONS_PER_SECOND_PER_SESSION: u32 = 200;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the API listens.
    pub api: ApiConfig,
    /// How to reach the enclave.
    pub enclave: EnclaveConfig,
    /// Per-caller limits.
    pub limits: Limits,
    /// Kerberos defaults.
    pub kerberos: KerberosConfig,
    /// Saved credentials.
    pub vault: VaultConfig,
    /// The KCM daemon's standing with the proxy.
    pub kcm: KcmConfig,
    /// NTLM.
    pub ntlm: NtlmConfig,
    /// The VMM's table (`credguard-vmm run --config`, which reads it and checks its keys); the
    /// proxy accepts it, so both can share one file, and ignores it.
    pub vmm: Option<toml::Table>,
}

/// Saved credentials (the vault).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Where the sealed credentials are stored: one directory per uid (0700), owned by the
    /// proxy's user. Holds only blobs sealed by the enclave, never a secret.
    pub dir: PathBuf,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            dir: crate::vault::DEFAULT_VAULT_DIR.into(),
        }
    }
}

/// Where the gRPC API listens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket path; every local user may connect, authorization is by uid.
    pub socket: PathBuf,
    /// Also listen on this AF_VSOCK port, for clients in other VMs (off when absent).
    pub vsock_port: Option<u32>,
    /// Accept secrets in the clear (a password, an NT hash or a key in `Logon` and
    /// `SaveCredential`). Off by default: clients seal secrets to the attested enclave, so the
    /// proxy only relays ciphertext. On for development (`credguard-lsa-proxy
    /// --allow-plaintext-secrets`, which the dev launcher passes); the proxy then wipes what it
    /// relayed and closes the connection after such a call, so that no buffer keeps it.
    pub allow_plaintext_secrets: bool,
}

/// The link to the enclave.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnclaveConfig {
    /// The VMM's hybrid-vsock Unix socket.
    pub vmm_socket: PathBuf,
    /// vsock port of the enclave service.
    pub port: u32,
    /// How long one enclave call may take before it fails with UNAVAILABLE, in milliseconds.
    pub call_timeout_ms: u64,
    /// Calls queued for the enclave at most; beyond it callers get RESOURCE_EXHAUSTED at once.
    pub max_queued_calls: usize,
}

/// Limits per caller.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open logon sessions per uid.
    pub sessions_per_uid: usize,
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
    /// Secret-using operations (NTLM authenticate, Kerberos AS and TGS exchanges, legacy
    /// attempts) per second per logon session, with a burst of the same size. The proxy passes it
    /// to the enclave at logon and the enclave enforces it, clamped to its compiled-in ceiling
    /// (`credguard_enclave::ratelimit::MAX_OPERATIONS_PER_SECOND`): a compromised proxy cannot
    /// lift it beyond that. 0 = the enclave's default.
    pub operations_per_second_per_session: u32,
}

/// Who may act for other uids: the KCM daemon (`credguard-kcm`) serves every uid's credential
/// cache from one process, so it calls the API with `credguard-on-behalf-of-uid` metadata.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KcmConfig {
    /// uids (besides root, who can become any uid anyway) whose calls may name another uid:
    /// the KCM daemon's user. Empty: only root.
    pub trusted_uids: Vec<u32>,
}

/// NTLM.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NtlmConfig {
    /// The workstation name the enclave puts in every AUTHENTICATE (servers log it, and may
    /// restrict an account to some workstations): up to 63 ASCII letters, digits, `-`, `_` and
    /// `.`; `""` sends none. Absent: this host's name as Samba makes its NetBIOS name (the first
    /// label, upper case, at most 15 characters); see [`NtlmConfig::resolve_workstation`].
    pub workstation: Option<String>,
}

/// Longest NetBIOS name, which the default workstation name is cut to.
const NETBIOS_NAME_LEN: usize = 15;

impl NtlmConfig {
    /// Fills in the default workstation name, from `host_name` (the host's name), unless the file
    /// gave one. A host name that makes no valid workstation name gives none.
    pub fn resolve_workstation(&mut self, host_name: &str) {
        if self.workstation.is_none() {
            let label = host_name.split('.').next().unwrap_or_default();
            let name: String = label.chars().take(NETBIOS_NAME_LEN).collect::<String>().to_uppercase();
            let valid = credguard_proto::checks::ntlm_workstation(&name).is_ok();
            self.workstation = Some(if valid { name } else { String::new() });
        }
    }

    /// The workstation name to send (empty: none, also while unresolved).
    pub fn workstation(&self) -> &str {
        self.workstation.as_deref().unwrap_or_default()
    }
}

/// This host's name (`gethostname`), or `""` if it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Kerberos defaults.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KerberosConfig {
    /// KDC `host:port` used for a realm that neither the `realms` table nor krb5.conf gives KDCs
    /// for (see [`crate::kdcs`] for the order of the sources).
    pub default_kdc: Option<String>,
    /// Ask for rc4-hmac on logons whose secret the proxy forwards unsealed (off by default; DES
    /// is never allowed). The enclave honours it only if its image's signed policy allows rc4-hmac
    /// (`credguard-image sign --allow-rc4`): this key alone cannot turn RC4 on.
    pub allow_rc4: bool,
    /// The KDCs of each realm, tried in turn: `[kerberos.realms."EXAMPLE.TEST"] kdc = ["kdc1:88",
    /// "kdc2:88"]`. A realm listed without `kdc` (and no `default_kdc`) has its KDCs found in DNS.
    /// The proxy sends Kerberos packets only to the KDCs of [`crate::kdcs`]; a caller other than
    /// root may name only one of them at logon.
    pub realms: BTreeMap<String, RealmConfig>,
    /// The DNS servers asked for SRV records (`ip:port`, `[v6]:port`, or an address for port 53),
    /// in turn; empty: the nameservers of /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    /// The krb5.conf whose `[realms]` give the KDCs of realms the table does not list; unset:
    /// `$KRB5_CONFIG`, else /etc/krb5.conf (`/dev/null` reads none). Read once at start.
    pub krb5_conf: Option<PathBuf>,
}

/// One realm of [`KerberosConfig::realms`].
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RealmConfig {
    /// Its KDCs as `host:port`, in the order they are tried; empty: found elsewhere (see
    /// [`crate::kdcs`]), in DNS if nowhere else.
    pub kdc: Vec<String>,
    /// Its kpasswd servers (RFC 3244 password changes) as `host:port`, in the order they are
    /// tried; empty: krb5.conf's, DNS's, or port 464 on each KDC's host.
    pub kpasswd: Vec<String>,
    /// The NetBIOS domain of the realm (`CORP` for `CORP.TEST`): a user typed as `CORP\alice`
    /// without a realm logs on in this realm.
    pub netbios_domain: Option<String>,
    /// FAST (RFC 6113) armoring of the realm's AS exchanges with the host's machine account
    /// (`credguardctl machine-account`): "if-offered" (the default), "require" or "off".
    pub fast: FastPolicy,
}

/// A realm's FAST policy ([`RealmConfig::fast`]).
///
/// "if-offered" is the default because it changes nothing until root registers a machine
/// account: without one no request is armored (as before FAST existed); with one, the AS exchange
/// is armored wherever the KDC's PREAUTH_REQUIRED offers FAST. "require" is for realms whose KDC
/// refuses unarmored requests, or where an unarmored password proof must never go out.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FastPolicy {
    /// Armor when the KDC offers FAST and the realm has a machine account.
    #[default]
    IfOffered,
    /// Always armor: without a machine account, or with an unarmored reply, the logon fails.
    Require,
    /// Never armor.
    Off,
}

impl FastPolicy {
    /// Its number in the enclave protocol (`KerberosAsRequest.fast`).
    pub fn wire(self) -> i32 {
        match self {
            FastPolicy::IfOffered => 0,
            FastPolicy::Off => 1,
            FastPolicy::Require => 2,
        }
    }
}

impl KerberosConfig {
    /// The FAST policy of `realm` (the default for a realm the table does not list).
    pub fn fast_of(&self, realm: &str) -> FastPolicy {
        self.realm(realm).map(|r| r.fast).unwrap_or_default()
    }

    /// The realm table's entry for `realm` (realm names compared without ASCII case).
    pub fn realm(&self, realm: &str) -> Option<&RealmConfig> {
        self.realms
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(realm))
            .map(|(_, r)| r)
    }

    /// The realm for a user typed as `DOMAIN\user` without a realm: the realm whose
    /// `netbios_domain` is `domain`, else the only realm of the table, else none (empty).
    pub fn realm_of_domain(&self, domain: &str) -> String {
        let named = self.realms.iter().find(|(_, r)| {
            r.netbios_domain
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
        });
        match (named, self.realms.len()) {
            (Some((realm, _)), _) => realm.clone(),
            (None, 1) => self.realms.keys().next().cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    fn check(&self) -> Result<(), String> {
        for kdc in self.default_kdc.iter().chain(self.realms.values().flat_map(|r| &r.kdc)) {
            if crate::core::check_host_port(kdc).is_err() {
                return Err(format!("kerberos: KDC {kdc:?} is not host:port"));
            }
        }
        for server in self.realms.values().flat_map(|r| &r.kpasswd) {
            if crate::core::check_host_port(server).is_err() {
                return Err(format!("kerberos: kpasswd server {server:?} is not host:port"));
            }
        }
        if self.dns_servers.len() > crate::kdc_dns::MAX_SERVERS {
            return Err(format!(
                "kerberos.dns_servers: at most {} servers",
                crate::kdc_dns::MAX_SERVERS
            ));
        }
        for server in &self.dns_servers {
            if crate::kdc_dns::parse_server(server).is_none() {
                return Err(format!(
                    "kerberos.dns_servers: {server:?} is not an IP address or ip:port"
                ));
            }
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: DEFAULT_API_SOCKET.into(),
            vsock_port: None,
            allow_plaintext_secrets: false,
        }
    }
}

impl Default for EnclaveConfig {
    fn default() -> Self {
        EnclaveConfig {
            vmm_socket: DEFAULT_VMM_SOCKET.into(),
            port: credguard_proto::abi::ENCLAVE_VSOCK_PORT,
            call_timeout_ms: 10_000,
            max_queued_calls: 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions_per_uid: 64,
            max_request_bytes: 64 * 1024,
            operations_per_second_per_session: DEFAULT_OPERATIONS_PER_SECOND_PER_SESSION,
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.limits.sessions_per_uid == 0 {
            return Err("limits.sessions_per_uid must be at least 1".into());
        }
        if c.limits.max_request_bytes < 1024 {
            return Err("limits.max_request_bytes must be at least 1024".into());
        }
        if c.enclave.max_queued_calls == 0 {
            return Err("enclave.max_queued_calls must be at least 1".into());
        }
        c.kerberos.check()?;
        if let Some(ws) = &c.ntlm.workstation {
            credguard_proto::checks::ntlm_workstation(ws).map_err(|e| format!("ntlm: {e}"))?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_qualified_user_finds_its_realm_by_netbios_domain_or_the_only_realm() {
        let two = Config::parse(
            "[kerberos.realms.\"CORP.TEST\"]\nkdc = [\"k:88\"]\nnetbios_domain = \"CORP\"\n\
             [kerberos.realms.\"OTHER.TEST\"]\nkdc = [\"o:88\"]\n",
        )
        .unwrap();
        assert_eq!(two.kerberos.realm_of_domain("corp"), "CORP.TEST");
        assert_eq!(
            two.kerberos.realm_of_domain("NOPE"),
            "",
            "two realms and no match: none"
        );
        let one = Config::parse("[kerberos.realms.\"CORP.TEST\"]\nkdc = [\"k:88\"]\n").unwrap();
        assert_eq!(one.kerberos.realm_of_domain("ANY"), "CORP.TEST");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn example_file_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/credguard.toml")).unwrap();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_API_SOCKET));
        // The example documents the defaults.
        assert_eq!(c, Config::default());
    }

    #[test]
    fn operation_rate_is_read() {
        assert_eq!(
            Config::default().limits.operations_per_second_per_session,
            DEFAULT_OPERATIONS_PER_SECOND_PER_SESSION
        );
        let c = Config::parse("[limits]\noperations_per_second_per_session = 5").unwrap();
        assert_eq!(c.limits.operations_per_second_per_session, 5);
    }

    #[test]
    fn the_realm_table_names_the_kdcs() {
        // Which of them the proxy uses, and when DNS is asked: kdcs::tests.
        let c = Config::parse(
            "[kerberos]\ndefault_kdc = \"kdc.other:88\"\n[kerberos.realms.\"TEST.REALM\"]\nkdc = [\"127.0.0.1:88\", \"kdc2.test:88\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.kerberos.realm("test.realm").unwrap().kdc,
            ["127.0.0.1:88", "kdc2.test:88"]
        );
        assert!(c.kerberos.realm("ELSEWHERE").is_none());
        assert!(Config::parse("[kerberos.realms.R]\nkdc = [\"nope\"]").is_err());
        assert!(Config::parse("[kerberos.realms.R]\nkpasswd = [\"nope\"]").is_err());
        assert!(Config::parse("[kerberos.realms.R]\nkdcs = []").is_err());
        assert!(Config::parse("[kerberos]\ndefault_kdc = \"nope\"").is_err());
        // FAST per realm; "if-offered" by default.
        let c = Config::parse("[kerberos.realms.\"CORP.TEST\"]\nfast = \"require\"\n").unwrap();
        assert_eq!(c.kerberos.fast_of("corp.test"), FastPolicy::Require);
        assert_eq!(c.kerberos.fast_of("OTHER.TEST"), FastPolicy::IfOffered);
        assert_eq!(FastPolicy::Require.wire(), 2);
        assert!(Config::parse("[kerberos.realms.R]\nfast = \"sometimes\"").is_err());
        // An empty entry: the realm's KDCs are found in DNS.
        let c = Config::parse("[kerberos.realms.\"CORP.TEST\"]\n").unwrap();
        assert_eq!(c.kerberos.realm("corp.test"), Some(&RealmConfig::default()));
    }

    #[test]
    fn dns_servers_and_krb5_conf_are_read_and_checked() {
        let c = Config::parse(
            "[kerberos]\ndns_servers = [\"127.0.0.1:53\", \"10.0.0.1\", \"[::1]:5353\"]\nkrb5_conf = \"/etc/k.conf\"\n",
        )
        .unwrap();
        assert_eq!(c.kerberos.dns_servers.len(), 3);
        assert_eq!(c.kerberos.krb5_conf, Some(PathBuf::from("/etc/k.conf")));
        for bad in ["dns.example:53", "127.0.0.1:0", "", "1.2.3.4:99999"] {
            let e = Config::parse(&format!("[kerberos]\ndns_servers = [\"{bad}\"]")).unwrap_err();
            assert!(e.contains("dns_servers"), "{bad}: {e}");
        }
        let many = ["\"127.0.0.1\""; crate::kdc_dns::MAX_SERVERS + 1].join(", ");
        assert!(Config::parse(&format!("[kerberos]\ndns_servers = [{many}]")).is_err());
    }

    #[test]
    fn the_vmm_table_is_accepted_and_ignored() {
        let c = Config::parse("[vmm]\nrequire_hidden_memory = true\ntrusted_key = \"/etc/credguard/signing.pub\"\n")
            .unwrap();
        assert_eq!(Config { vmm: None, ..c }, Config::default());
    }

    #[test]
    fn plaintext_secrets_are_refused_unless_allowed() {
        assert!(!Config::default().api.allow_plaintext_secrets);
        let c = Config::parse("[api]\nallow_plaintext_secrets = true").unwrap();
        assert!(c.api.allow_plaintext_secrets);
    }

    #[test]
    fn the_workstation_name_is_checked_and_defaults_to_the_host_name() {
        let c = Config::parse("[ntlm]\nworkstation = \"WS-01\"").unwrap();
        assert_eq!(c.ntlm.workstation(), "WS-01");
        let mut c = c.ntlm;
        c.resolve_workstation("ignored");
        assert_eq!(c.workstation(), "WS-01", "the file's name wins");
        for bad in ["a b", "ws\\1", &"x".repeat(64)] {
            let text = format!("[ntlm]\nworkstation = {bad:?}");
            assert!(
                Config::parse(&text).is_err_and(|e| e.contains("workstation")),
                "{bad:?}"
            );
        }
        let resolved = |host: &str| {
            let mut n = NtlmConfig::default();
            n.resolve_workstation(host);
            n.workstation().to_string()
        };
        assert_eq!(resolved("laptop-7.corp.test"), "LAPTOP-7");
        assert_eq!(resolved("a-very-long-host-name-indeed"), "A-VERY-LONG-HOS");
        assert_eq!(resolved("h\u{e9}te"), "", "no valid name: none");
        assert_eq!(resolved(""), "");
        assert!(!host_name().is_empty());
        assert_eq!(Config::default().ntlm.workstation(), "", "unresolved: none");
    }

    #[test]
    fn unknown_keys_and_bad_limits_are_refused() {
        assert!(Config::parse("[api]\nsockett = \"/x\"").is_err());
        assert!(Config::parse("[limits]\nsessions_per_uid = 0").is_err());
    }
}
