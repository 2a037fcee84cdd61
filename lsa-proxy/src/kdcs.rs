//! Where the proxy finds a realm's KDCs, first source that has them wins:
//!
//! 1. the KDC a logon named (checked then: only root may name one not found below);
//! 2. the realm table: `[kerberos.realms."R"] kdc = [...]`;
//! 3. krb5.conf's `[realms] R = { kdc = ... }` (`kerberos.krb5_conf`, else `$KRB5_CONFIG`, else
//!    /etc/krb5.conf; read once at start);
//! 4. `kerberos.default_kdc`;
//! 5. DNS: for a realm the table or krb5.conf names without KDCs (an empty
//!    `[kerberos.realms."R"]` is enough), the SRV records `_kerberos._udp.R` and
//!    `_kerberos._tcp.R` from `kerberos.dns_servers` (else resolv.conf's nameservers).
//!
//! DNS is asked only for realms the configuration names: a caller cannot make the proxy look up
//! a domain of its choosing and send Kerberos wherever that domain's records point. KDCs found in
//! DNS count as configured for their realm (any caller may name one at logon). The kpasswd
//! servers: the table's `kpasswd`, else krb5.conf's `kpasswd_server` (else its `admin_server`
//! hosts) on port 464, else for a realm found in DNS the `_kpasswd._udp`/`_kpasswd._tcp`
//! records, else port 464 on each KDC's host.
//!
//! Each list is tried in turn (`kerberos::kdc_exchange_any`): a KDC that does not answer (time
//! out, refused, no address) passes the request to the next.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::debug;

use crate::config::KerberosConfig;
use crate::error::LsaError;
use crate::kdc_dns::{self, DnsResolver, Target};
use crate::krb5_conf::{Krb5Realms, krb5_conf_paths};

/// How long finding a realm's servers in DNS may take in all (SRV records and the targets'
/// addresses, every server asked).
pub const DNS_LOOKUP_DEADLINE: Duration = Duration::from_secs(10);
/// The kpasswd port (RFC 3244).
pub const KPASSWD_PORT: u16 = 464;

/// A KDC or kpasswd server to try: its name (`host:port`, as configured or as DNS gave it) and,
/// when DNS found it, its address (else the name is resolved by the system when it is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdcAddr {
    /// `host:port`.
    pub name: String,
    /// The address DNS gave for it.
    pub addr: Option<SocketAddr>,
}

impl KdcAddr {
    /// A server known by name only.
    pub fn named(name: impl Into<String>) -> Self {
        KdcAddr {
            name: name.into(),
            addr: None,
        }
    }

    /// Whether a caller's `host:port` names this server (by name, or by the address DNS gave).
    pub fn matches(&self, kdc: &str) -> bool {
        self.name.eq_ignore_ascii_case(kdc) || self.addr.is_some_and(|a| a.to_string() == kdc)
    }

    /// The same host on `port`.
    fn on_port(&self, port: u16) -> Option<KdcAddr> {
        let (host, _) = self.name.rsplit_once(':')?;
        Some(KdcAddr {
            name: format!("{host}:{port}"),
            addr: self.addr.map(|a| SocketAddr::new(a.ip(), port)),
        })
    }
}

impl fmt::Display for KdcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) if a.to_string() != self.name => write!(f, "{} ({a})", self.name),
            _ => f.write_str(&self.name),
        }
    }
}

/// Which source gave a realm's KDCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdcSource {
    /// `[kerberos.realms."R"] kdc`.
    Table,
    /// krb5.conf's `[realms]`.
    Krb5Conf,
    /// `kerberos.default_kdc`.
    DefaultKdc,
    /// DNS SRV records.
    Dns,
}

/// Finds the KDCs and kpasswd servers of realms (see the module's documentation).
pub struct KdcLocator {
    config: KerberosConfig,
    krb5: Krb5Realms,
    dns: DnsResolver,
}

impl KdcLocator {
    /// The locator of `config`, with the krb5.conf it names (or `$KRB5_CONFIG`, or
    /// /etc/krb5.conf) read now.
    pub fn new(config: &KerberosConfig) -> Self {
        let env = std::env::var_os("KRB5_CONFIG");
        let (paths, required) = krb5_conf_paths(config.krb5_conf.as_deref(), env.as_deref());
        Self::with_krb5(config, Krb5Realms::load(&paths, required))
    }

    /// The locator of `config` with the krb5.conf realms `krb5`.
    pub fn with_krb5(config: &KerberosConfig, krb5: Krb5Realms) -> Self {
        let servers = (!config.dns_servers.is_empty()).then(|| {
            config
                .dns_servers
                .iter()
                .filter_map(|s| kdc_dns::parse_server(s))
                .collect()
        });
        KdcLocator {
            config: config.clone(),
            krb5,
            dns: DnsResolver::new(servers),
        }
    }

    /// The same with another per-query DNS timeout (tests).
    pub fn with_dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns = self.dns.with_timeout(timeout);
        self
    }

    /// Which source gives `realm`'s KDCs and the `host:port` names it gives (none for DNS, which
    /// is asked later); `None` if no source has the realm.
    pub fn source(&self, realm: &str) -> Option<(KdcSource, Vec<String>)> {
        let table = self.config.realm(realm);
        let krb5 = self.krb5.realm(realm);
        if let Some(t) = table.filter(|t| !t.kdc.is_empty()) {
            return Some((KdcSource::Table, t.kdc.clone()));
        }
        if let Some(k) = krb5.filter(|k| !k.kdc.is_empty()) {
            return Some((KdcSource::Krb5Conf, k.kdc.clone()));
        }
        if let Some(d) = &self.config.default_kdc {
            return Some((KdcSource::DefaultKdc, vec![d.clone()]));
        }
        (table.is_some() || krb5.is_some()).then(|| (KdcSource::Dns, Vec::new()))
    }

    /// `realm`'s KDCs in the order to try them.
    pub async fn kdcs(&self, realm: &str) -> Result<Vec<KdcAddr>, LsaError> {
        match self.source(realm) {
            None => Err(no_kdc(realm)),
            Some((KdcSource::Dns, _)) => {
                let found = self.discover("_kerberos", realm).await?;
                if found.is_empty() {
                    return Err(LsaError::FailedPrecondition(format!(
                        "no KDC for realm {realm:?}: the DNS servers ({}) have no _kerberos._udp or _kerberos._tcp \
                         SRV records for it; name its KDCs ([kerberos.realms.\"{realm}\"] kdc = [\"host:88\"]) or \
                         point kerberos.dns_servers at the domain's DNS",
                        self.servers()
                    )));
                }
                Ok(found)
            }
            Some((_, names)) => Ok(names.into_iter().map(KdcAddr::named).collect()),
        }
    }

    /// The kpasswd servers of `realm`, whose KDCs (as the session uses them) are `kdcs`.
    pub async fn kpasswd(&self, realm: &str, kdcs: &[KdcAddr]) -> Vec<KdcAddr> {
        if let Some(t) = self.config.realm(realm).filter(|t| !t.kpasswd.is_empty()) {
            return t.kpasswd.iter().map(KdcAddr::named).collect();
        }
        let krb5 = self.krb5.realm(realm).map(|k| k.kpasswd()).unwrap_or_default();
        if !krb5.is_empty() {
            return krb5.into_iter().map(KdcAddr::named).collect();
        }
        if matches!(self.source(realm), Some((KdcSource::Dns, _))) {
            match self.discover("_kpasswd", realm).await {
                Ok(found) if !found.is_empty() => return found,
                Ok(_) => {}
                Err(e) => debug!(realm, error = %e, "no kpasswd SRV records: the KDCs' hosts on port 464"),
            }
        }
        let mut out: Vec<KdcAddr> = Vec::new();
        for k in kdcs.iter().filter_map(|k| k.on_port(KPASSWD_PORT)) {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// Whether `kdc` (`host:port`) is one of `realm`'s KDCs as the configuration (or DNS, for a
    /// realm found there) gives them: any caller may name it.
    pub async fn is_configured(&self, realm: &str, kdc: &str) -> bool {
        match self.source(realm) {
            None => false,
            Some((KdcSource::Dns, _)) => self
                .kdcs(realm)
                .await
                .is_ok_and(|found| found.iter().any(|k| k.matches(kdc))),
            Some((_, names)) => names.iter().any(|n| n.eq_ignore_ascii_case(kdc)),
        }
    }

    /// The servers to use for the KDC a logon named: for a realm found in DNS, the addresses DNS
    /// gave for that name (which the system's resolver may not know); else the name itself.
    pub async fn named(&self, realm: &str, kdc: &str) -> Vec<KdcAddr> {
        if matches!(self.source(realm), Some((KdcSource::Dns, _)))
            && let Ok(found) = self.kdcs(realm).await
        {
            let same: Vec<KdcAddr> = found.into_iter().filter(|k| k.matches(kdc)).collect();
            if !same.is_empty() {
                return same;
            }
        }
        vec![KdcAddr::named(kdc)]
    }

    fn servers(&self) -> String {
        let servers: Vec<String> = self.dns.servers().iter().map(ToString::to_string).collect();
        servers.join(", ")
    }

    /// `service`'s servers for `realm` from DNS, each target's addresses in turn.
    async fn discover(&self, service: &str, realm: &str) -> Result<Vec<KdcAddr>, LsaError> {
        let failed = |why: String| {
            LsaError::Unavailable(format!(
                "finding the {} servers of realm {realm:?} in DNS failed (servers asked: {}): {why}",
                service.trim_start_matches('_'),
                self.servers()
            ))
        };
        let targets = tokio::time::timeout(
            DNS_LOOKUP_DEADLINE,
            self.dns.service(service, &realm.to_ascii_lowercase()),
        )
        .await
        .map_err(|_| failed(format!("no answer within {} s", DNS_LOOKUP_DEADLINE.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
        let found: Vec<KdcAddr> = targets.iter().flat_map(addrs_of).collect();
        debug!(realm, service, servers = ?found.iter().map(ToString::to_string).collect::<Vec<_>>(), "found in DNS");
        Ok(found)
    }
}

/// A DNS target's servers: one per address, or its name alone if DNS gave no address.
fn addrs_of(t: &Target) -> Vec<KdcAddr> {
    let name = format!("{}:{}", t.host, t.port);
    if t.addrs.is_empty() {
        return vec![KdcAddr::named(name)];
    }
    t.addrs
        .iter()
        .map(|ip| KdcAddr {
            name: name.clone(),
            addr: Some(SocketAddr::new(*ip, t.port)),
        })
        .collect()
}

fn no_kdc(realm: &str) -> LsaError {
    LsaError::FailedPrecondition(format!(
        "no KDC for realm {realm:?}: name its KDCs ([kerberos.realms.\"{realm}\"] kdc = [\"host:88\"]), or add an \
         empty [kerberos.realms.\"{realm}\"] to find them in DNS (SRV records), or list the realm in krb5.conf, or \
         set kerberos.default_kdc"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::kdc_dns::fake;

    fn locator(config: &str, krb5: &str) -> KdcLocator {
        let c = Config::parse(config).unwrap();
        KdcLocator::with_krb5(&c.kerberos, Krb5Realms::parse(krb5)).with_dns_timeout(Duration::from_millis(300))
    }

    fn names(kdcs: &[KdcAddr]) -> Vec<String> {
        kdcs.iter().map(ToString::to_string).collect()
    }

    const KRB5: &str = "[realms]\nFILE.TEST = {\n kdc = kdc.file.test\n admin_server = adm.file.test\n}\n\
                        TABLE.TEST = {\n kdc = shadowed.test\n kpasswd_server = kpw.file.test\n}\nDNS.TEST = {\n}\n";

    #[tokio::test]
    async fn the_first_source_that_names_kdcs_wins() {
        let l = locator(
            "[kerberos]\ndefault_kdc = \"default.test:88\"\n[kerberos.realms.\"TABLE.TEST\"]\nkdc = [\"a.test:88\", \"b.test:88\"]\n\
             [kerberos.realms.\"EMPTY.TEST\"]\nkpasswd = [\"kpw.empty.test:464\"]\n",
            KRB5,
        );
        assert_eq!(l.source("table.test").unwrap().0, KdcSource::Table);
        assert_eq!(names(&l.kdcs("TABLE.TEST").await.unwrap()), ["a.test:88", "b.test:88"]);
        assert_eq!(l.source("FILE.TEST").unwrap().0, KdcSource::Krb5Conf);
        assert_eq!(names(&l.kdcs("file.test").await.unwrap()), ["kdc.file.test:88"]);
        // A realm with a table entry but no KDC list, and one named nowhere: default_kdc (which
        // the MIT KDC tests rely on) before DNS.
        for realm in ["EMPTY.TEST", "DNS.TEST", "ELSEWHERE"] {
            assert_eq!(l.source(realm).unwrap().0, KdcSource::DefaultKdc, "{realm}");
        }
        assert!(l.is_configured("TABLE.TEST", "B.TEST:88").await);
        assert!(!l.is_configured("TABLE.TEST", "shadowed.test:88").await);
        assert!(!l.is_configured("TABLE.TEST", "default.test:88").await);
        assert!(l.is_configured("FILE.TEST", "kdc.file.test:88").await);
        assert!(!l.is_configured("FILE.TEST", "evil.test:88").await);
        assert!(l.is_configured("ELSEWHERE", "default.test:88").await);

        // Without default_kdc: DNS, for realms the configuration names, and nothing else.
        let l = locator("[kerberos.realms.\"EMPTY.TEST\"]\n", KRB5);
        assert_eq!(l.source("empty.test").unwrap().0, KdcSource::Dns);
        assert_eq!(l.source("DNS.TEST").unwrap().0, KdcSource::Dns);
        assert!(l.source("ELSEWHERE").is_none());
        let e = l.kdcs("ELSEWHERE").await.unwrap_err();
        assert!(
            matches!(&e, LsaError::FailedPrecondition(m) if m.contains("[kerberos.realms.\"ELSEWHERE\"]")),
            "{e:?}"
        );
        assert!(!l.is_configured("ELSEWHERE", "kdc.elsewhere:88").await);
    }

    #[tokio::test]
    async fn kpasswd_servers_come_from_the_table_krb5_conf_or_the_kdc_hosts() {
        let l = locator(
            "[kerberos.realms.\"TABLE.TEST\"]\nkdc = [\"a.test:88\"]\n[kerberos.realms.\"K.TEST\"]\nkdc = [\"k.test:88\"]\n\
             kpasswd = [\"kpw.test:1464\"]\n",
            KRB5,
        );
        let kdcs = l.kdcs("K.TEST").await.unwrap();
        assert_eq!(names(&l.kpasswd("K.TEST", &kdcs).await), ["kpw.test:1464"]);
        let kdcs = l.kdcs("TABLE.TEST").await.unwrap();
        assert_eq!(names(&l.kpasswd("TABLE.TEST", &kdcs).await), ["kpw.file.test:464"]);
        let kdcs = l.kdcs("FILE.TEST").await.unwrap();
        assert_eq!(names(&l.kpasswd("FILE.TEST", &kdcs).await), ["adm.file.test:464"]);
        let found = vec![
            KdcAddr::named("[::1]:88"),
            KdcAddr {
                name: "dc.test:88".into(),
                addr: Some("127.0.0.2:88".parse().unwrap()),
            },
            KdcAddr::named("[::1]:750"),
        ];
        assert_eq!(
            names(&l.kpasswd("OTHER", &found).await),
            ["[::1]:464", "dc.test:464 (127.0.0.2:464)"]
        );
    }

    #[tokio::test]
    async fn a_realm_without_kdcs_has_them_found_in_dns() {
        let dns = fake::start(fake::corp_zone([127, 0, 0, 1])).await;
        let config = format!(
            "[kerberos]\ndns_servers = [\"{}\"]\n[kerberos.realms.\"CORP.TEST\"]\n[kerberos.realms.\"NONE.TEST\"]\n",
            dns.addr
        );
        let l = locator(&config, "");
        let kdcs = l.kdcs("CORP.TEST").await.unwrap();
        assert_eq!(names(&kdcs), ["dc1.corp.test:88 (127.0.0.1:88)"]);
        assert_eq!(
            names(&l.kpasswd("CORP.TEST", &kdcs).await),
            ["dc1.corp.test:464 (127.0.0.1:464)"]
        );
        // Found in DNS is configured: by name or by address; nothing else is.
        assert!(l.is_configured("corp.test", "dc1.corp.test:88").await);
        assert!(l.is_configured("CORP.TEST", "127.0.0.1:88").await);
        assert!(!l.is_configured("CORP.TEST", "127.0.0.1:89").await);
        // A logon naming the DC gets the address DNS gave (the system resolver does not know it).
        assert_eq!(
            names(&l.named("CORP.TEST", "DC1.corp.test:88").await),
            ["dc1.corp.test:88 (127.0.0.1:88)"]
        );
        assert_eq!(names(&l.named("CORP.TEST", "other.test:88").await), ["other.test:88"]);
        // No SRV records: FAILED_PRECONDITION naming the realm and the servers.
        let e = l.kdcs("NONE.TEST").await.unwrap_err();
        let LsaError::FailedPrecondition(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.contains("\"NONE.TEST\"") && m.contains(&dns.addr.to_string()), "{m}");
    }

    #[tokio::test]
    async fn a_dns_lookup_that_times_out_names_the_realm_and_the_servers() {
        let silent = fake::start(Arc::new(|_, _| Vec::new())).await;
        let l = locator(
            &format!(
                "[kerberos]\ndns_servers = [\"{}\"]\n[kerberos.realms.\"CORP.TEST\"]\n",
                silent.addr
            ),
            "",
        );
        let e = l.kdcs("CORP.TEST").await.unwrap_err();
        let LsaError::Unavailable(m) = &e else { panic!("{e:?}") };
        assert!(m.contains("realm \"CORP.TEST\""), "{m}");
        assert!(m.contains(&format!("servers asked: {}", silent.addr)), "{m}");
        assert!(m.contains("timed out"), "{m}");
        assert!(!l.is_configured("CORP.TEST", "127.0.0.1:88").await);
        assert_eq!(names(&l.named("CORP.TEST", "127.0.0.1:88").await), ["127.0.0.1:88"]);
    }
}
