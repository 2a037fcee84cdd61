//! The names users type for a logon, as Windows takes them, turned into the Kerberos client name
//! and realm and the NTLM user and domain. Both sides run it: the enclave on the names it was given
//! (and, for a sealed secret, sealed to), the proxy to pick the realm's KDCs. So they cannot
//! disagree on which realm a logon belongs to.
//!
//! - `alice` (with a realm): `alice@REALM`.
//! - `CORP\alice`: the user `alice` of the NetBIOS domain `CORP`; the realm is the one given, or
//!   the proxy's realm for that domain (`default_realm`).
//! - `alice@corp.test`: a user principal name. With no realm given, or with a realm equal to its
//!   suffix, it is `alice@CORP.TEST`. With another realm it is an enterprise name (`NT-ENTERPRISE`,
//!   RFC 6806): `alice@corp.test` asked of that realm's KDC, which maps it to the account (an AD
//!   UPN suffix such as `example.org` in the realm `CORP.TEST`).

use alloc::string::{String, ToString};

use crate::checks::CheckError;

/// What a logon's names mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogonNames {
    /// The user: the Kerberos client name's one component, and the NTLM user name.
    pub user: String,
    /// The NetBIOS domain for NTLM (empty for a user principal name given without one).
    pub domain: String,
    /// The Kerberos realm, upper case as Kerberos spells AD realms (empty: no Kerberos).
    pub realm: String,
    /// `user` is an enterprise name (`user@suffix`, `NT-ENTERPRISE`).
    pub enterprise: bool,
}

/// Reads the names of a logon: `user` as typed, the `domain` and `realm` given (either may be
/// empty), and `default_realm`, the realm the proxy's configuration gives for a domain-qualified
/// name without a realm (empty if none).
pub fn logon_names(user: &str, domain: &str, realm: &str, default_realm: &str) -> Result<LogonNames, CheckError> {
    if let Some((qualifier, name)) = user.split_once('\\') {
        return domain_qualified(qualifier, name, domain, realm, default_realm);
    }
    if let Some((name, suffix)) = user.rsplit_once('@') {
        return principal_name(user, name, suffix, domain, realm);
    }
    Ok(LogonNames {
        user: user.to_string(),
        domain: domain.to_string(),
        realm: realm.to_string(),
        enterprise: false,
    })
}

/// `DOMAIN\user`.
fn domain_qualified(
    qualifier: &str,
    name: &str,
    domain: &str,
    realm: &str,
    default_realm: &str,
) -> Result<LogonNames, CheckError> {
    if qualifier.is_empty() || name.is_empty() || name.contains(['\\', '@']) {
        return Err(CheckError::Malformed {
            field: "user",
            what: "DOMAIN\\user needs a domain and a user, with no other \\ or @",
        });
    }
    if !domain.is_empty() && !domain.eq_ignore_ascii_case(qualifier) {
        return Err(CheckError::Malformed {
            field: "domain",
            what: "the domain given differs from the one in DOMAIN\\user",
        });
    }
    Ok(LogonNames {
        user: name.to_string(),
        domain: qualifier.to_string(),
        realm: if realm.is_empty() { default_realm } else { realm }.to_string(),
        enterprise: false,
    })
}

/// `user@suffix`.
fn principal_name(typed: &str, name: &str, suffix: &str, domain: &str, realm: &str) -> Result<LogonNames, CheckError> {
    if name.is_empty() || suffix.is_empty() || name.contains('@') {
        return Err(CheckError::Malformed {
            field: "user",
            what: "user@suffix needs a user and a suffix, with one @",
        });
    }
    if realm.is_empty() || realm.eq_ignore_ascii_case(suffix) {
        let realm = if realm.is_empty() {
            suffix.to_ascii_uppercase()
        } else {
            realm.to_string()
        };
        return Ok(LogonNames {
            user: name.to_string(),
            domain: domain.to_string(),
            realm,
            enterprise: false,
        });
    }
    Ok(LogonNames {
        user: typed.to_string(),
        domain: domain.to_string(),
        realm: realm.to_string(),
        enterprise: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(user: &str, domain: &str, realm: &str, default_realm: &str) -> (String, String, String, bool) {
        let n = logon_names(user, domain, realm, default_realm).unwrap();
        (n.user, n.domain, n.realm, n.enterprise)
    }

    fn t(user: &str, domain: &str, realm: &str, enterprise: bool) -> (String, String, String, bool) {
        (user.into(), domain.into(), realm.into(), enterprise)
    }

    #[test]
    fn a_plain_name_stays_as_it_is() {
        assert_eq!(names("alice", "", "CORP.TEST", ""), t("alice", "", "CORP.TEST", false));
        assert_eq!(names("alice", "CORP", "", "X"), t("alice", "CORP", "", false));
    }

    #[test]
    fn a_domain_qualified_name_takes_the_realm_given_or_the_proxys() {
        assert_eq!(
            names("CORP\\alice", "", "CORP.TEST", ""),
            t("alice", "CORP", "CORP.TEST", false)
        );
        assert_eq!(
            names("CORP\\alice", "", "", "CORP.TEST"),
            t("alice", "CORP", "CORP.TEST", false)
        );
        assert_eq!(names("corp\\alice", "CORP", "", ""), t("alice", "corp", "", false));
        for bad in ["\\alice", "CORP\\", "CORP\\a\\b", "CORP\\a@b"] {
            assert!(logon_names(bad, "", "R", "").is_err(), "{bad}");
        }
        assert!(logon_names("CORP\\alice", "OTHER", "R", "").is_err());
    }

    #[test]
    fn a_user_principal_name_is_a_plain_one_in_its_own_realm_and_an_enterprise_one_elsewhere() {
        assert_eq!(names("alice@corp.test", "", "", ""), t("alice", "", "CORP.TEST", false));
        assert_eq!(
            names("alice@corp.test", "", "CORP.TEST", ""),
            t("alice", "", "CORP.TEST", false)
        );
        assert_eq!(
            names("erin@example.org", "", "CORP.TEST", ""),
            t("erin@example.org", "", "CORP.TEST", true)
        );
        for bad in ["@corp.test", "alice@", "a@b@c"] {
            assert!(logon_names(bad, "", "R", "").is_err(), "{bad}");
        }
    }
}
