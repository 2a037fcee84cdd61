//! The `[realms]` section of MIT's `krb5.conf`: the KDCs and password-change servers of realms
//! the proxy's own table does not list.
//!
//! Parsed by hand: no maintained crate reads MIT's profile syntax (krb5.conf(5): `tag = value`
//! relations, `tag = { ... }` subsections, `}*` final markers, `#`/`;` comment lines), and the
//! INI crates choke on its nesting. Only three relations of one section are needed (`kdc`,
//! `kpasswd_server`, `admin_server`). The file is untrusted text as far as robustness goes: it
//! is read bounded, anything not understood is skipped, and nothing in it can make the parser
//! fail. `include`/`includedir` directives are not followed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// The file read when neither the configuration nor `$KRB5_CONFIG` names one.
pub const DEFAULT_KRB5_CONF: &str = "/etc/krb5.conf";
/// Largest file read; a larger one is skipped whole (with a warning), not cut.
pub const MAX_FILE_LEN: u64 = 1 << 20;
/// Realms kept at most, over all files.
const MAX_REALMS: usize = 1024;
/// Servers kept at most per relation of a realm.
const MAX_SERVERS: usize = 32;
/// Longest host name taken (DNS names are at most 253 characters).
const MAX_HOST_LEN: usize = 253;
/// The Kerberos and kpasswd ports (RFC 4120 7.2.3, RFC 3244).
const KDC_PORT: u16 = 88;
const KPASSWD_PORT: u16 = 464;

/// What krb5.conf says of one realm, every server as `host:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Krb5Realm {
    /// `kdc` relations, in file order (port 88 when none is given).
    pub kdc: Vec<String>,
    /// `kpasswd_server` relations (port 464 when none is given).
    pub kpasswd_server: Vec<String>,
    /// The hosts of the `admin_server` relations (its port is kadmin's, not kpasswd's).
    pub admin_server: Vec<String>,
}

impl Krb5Realm {
    /// The realm's kpasswd servers as MIT's library finds them: `kpasswd_server`, else each
    /// `admin_server` host on port 464.
    pub fn kpasswd(&self) -> Vec<String> {
        if !self.kpasswd_server.is_empty() {
            return self.kpasswd_server.clone();
        }
        self.admin_server
            .iter()
            .map(|h| format!("{h}:{KPASSWD_PORT}"))
            .collect()
    }

    fn add(&mut self, tag: &str, value: &str) {
        let joined = |(host, port): (String, u16)| format!("{host}:{port}");
        let (list, parsed) = match tag {
            "kdc" => (&mut self.kdc, host_port(value, KDC_PORT).map(joined)),
            "kpasswd_server" => (&mut self.kpasswd_server, host_port(value, KPASSWD_PORT).map(joined)),
            "admin_server" => (&mut self.admin_server, host_port(value, KPASSWD_PORT).map(|(h, _)| h)),
            _ => return,
        };
        match parsed {
            Some(v) if list.len() < MAX_SERVERS && !list.contains(&v) => list.push(v),
            Some(_) => {}
            None => debug!(tag, value, "krb5.conf: a server that is not host[:port] is skipped"),
        }
    }
}

/// The `[realms]` of one or more krb5.conf files, looked up without ASCII case (as the proxy's
/// own realm table is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Krb5Realms {
    realms: BTreeMap<String, Krb5Realm>,
}

impl Krb5Realms {
    /// The entry of `realm`, if a file has one.
    pub fn realm(&self, realm: &str) -> Option<&Krb5Realm> {
        self.realms.get(&realm.to_ascii_uppercase())
    }

    /// The realms of `text` (one file).
    pub fn parse(text: &str) -> Self {
        let mut out = Krb5Realms::default();
        out.merge(parse_realms(text));
        out
    }

    /// Adds the realms of a later file: a realm an earlier file has keeps that file's entry.
    fn merge(&mut self, realms: Vec<(String, Krb5Realm)>) {
        for (name, realm) in realms {
            if self.realms.len() >= MAX_REALMS {
                return;
            }
            self.realms.entry(name.to_ascii_uppercase()).or_insert(realm);
        }
    }

    /// The realms of the files `paths`, in order; a missing, unreadable or oversized file is
    /// skipped (a warning when the configuration named it, `required`).
    pub fn load(paths: &[PathBuf], required: bool) -> Self {
        let mut out = Krb5Realms::default();
        for path in paths {
            match read_bounded(path) {
                Ok(text) => {
                    let realms = parse_realms(&text);
                    debug!(path = %path.display(), realms = realms.len(), "krb5.conf read");
                    out.merge(realms);
                }
                Err(e) if required || e.kind() != std::io::ErrorKind::NotFound => {
                    warn!(path = %path.display(), error = %e, "krb5.conf not read: its [realms] are not used");
                }
                Err(_) => debug!(path = %path.display(), "no krb5.conf"),
            }
        }
        out
    }
}

/// The files to read and whether the configuration named them: `configured`, else
/// `$KRB5_CONFIG` (a colon-separated list, as MIT's), else [`DEFAULT_KRB5_CONF`].
pub fn krb5_conf_paths(configured: Option<&Path>, env: Option<&std::ffi::OsStr>) -> (Vec<PathBuf>, bool) {
    if let Some(path) = configured {
        return (vec![path.to_path_buf()], true);
    }
    let from_env: Vec<PathBuf> = env
        .map(|v| std::env::split_paths(v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if from_env.is_empty() {
        (vec![DEFAULT_KRB5_CONF.into()], false)
    } else {
        (from_env, false)
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(std::io::Error::other(format!("larger than {MAX_FILE_LEN} bytes")));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Where the parser is: which section, how deep in braces, and which realm's block is open.
#[derive(Default)]
struct Cursor {
    in_realms: bool,
    depth: usize,
    realm: Option<(String, Krb5Realm)>,
}

/// The realms of one file, in file order.
fn parse_realms(text: &str) -> Vec<(String, Krb5Realm)> {
    let mut out = Vec::new();
    let mut at = Cursor::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            out.extend(at.realm.take());
            let name = section.split(']').next().unwrap_or_default().trim();
            at = Cursor {
                in_realms: name == "realms",
                ..Cursor::default()
            };
        } else if line.starts_with('}') {
            at.depth = at.depth.saturating_sub(1);
            if at.depth == 0 {
                out.extend(at.realm.take());
            }
        } else if let Some((tag, value)) = line.split_once('=') {
            relation(&mut at, tag.trim(), value.trim());
        }
        // Anything else (`include`, `module`, stray words) means nothing here.
    }
    out.extend(at.realm.take());
    out
}

fn relation(at: &mut Cursor, tag: &str, value: &str) {
    if value.starts_with('{') {
        at.depth = at.depth.saturating_add(1);
        if at.in_realms && at.depth == 1 && !tag.is_empty() {
            at.realm = Some((tag.to_string(), Krb5Realm::default()));
        }
        return;
    }
    if at.depth == 1
        && let Some((_, realm)) = at.realm.as_mut()
    {
        realm.add(tag, &unquote(value));
    }
}

/// A profile value: a quoted string with its escapes undone, else the text as it stands.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address (MIT accepts all, and a
/// `tcp/`/`udp/` prefix: the proxy tries both transports anyway) as host (IPv6 in brackets) and
/// port, `default_port` when none is given; `None` for anything else (URLs of MS-KKDCP proxies
/// included: the proxy speaks only the native transports).
fn host_port(value: &str, default_port: u16) -> Option<(String, u16)> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return None;
    }
    let value = ["tcp/", "udp/", "TCP/", "UDP/"]
        .iter()
        .find_map(|p| value.strip_prefix(p))
        .unwrap_or(value);
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        (format!("[{v6}]"), after.strip_prefix(':').unwrap_or(after))
    } else if value.matches(':').count() > 1 {
        value.parse::<std::net::Ipv6Addr>().ok()?;
        (format!("[{value}]"), "")
    } else {
        let (h, p) = value.split_once(':').unwrap_or((value, ""));
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if h.is_empty() || h.len() > MAX_HOST_LEN || !h.chars().all(plain) {
            return None;
        }
        (h.to_string(), p)
    };
    let port = if port.is_empty() {
        default_port
    } else {
        port.parse::<u16>().ok().filter(|&p| p != 0)?
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_LIKE: &str = r#"
[libdefaults]
	default_realm = ATHENA.MIT.EDU
	kdc = not.a.realm:88
# The following krb5.conf variables are only for MIT Kerberos.
	kdc_timesync = 1

[realms]
	ATHENA.MIT.EDU = {
		kdc = kerberos.mit.edu
		kdc = kerberos-1.mit.edu
		kdc = kerberos-2.mit.edu:88
		admin_server = kerberos.mit.edu
		default_domain = mit.edu
	}
	ZONE.MIT.EDU = {
		kdc = casio.mit.edu
		kpasswd_server = kpw.mit.edu:1464
		auth_to_local = {
			kdc = nested.ignored
		}
	}
    CORP.TEST = {
     kdc = "tcp/dc1.corp.test:88"
     kdc = [::1]:8888
     kdc = ::2
     kdc = udp/[fe80::1]
     kdc = https://kkdcp.corp.test/KdcProxy
     admin_server = dc1.corp.test:749
    }*
   ; a comment
[domain_realm]
	.mit.edu = ATHENA.MIT.EDU
	OTHER.REALM = {
		kdc = wrong.section
	}
"#;

    #[test]
    fn the_realms_section_gives_kdcs_and_password_servers() {
        let r = Krb5Realms::parse(DEBIAN_LIKE);
        let athena = r.realm("athena.mit.edu").unwrap();
        assert_eq!(
            athena.kdc,
            ["kerberos.mit.edu:88", "kerberos-1.mit.edu:88", "kerberos-2.mit.edu:88"]
        );
        assert_eq!(athena.admin_server, ["kerberos.mit.edu"]);
        assert_eq!(athena.kpasswd(), ["kerberos.mit.edu:464"]);
        let zone = r.realm("ZONE.MIT.EDU").unwrap();
        // The subsection's relation is not the realm's.
        assert_eq!(zone.kdc, ["casio.mit.edu:88"]);
        assert_eq!(zone.kpasswd(), ["kpw.mit.edu:1464"]);
        let corp = r.realm("CORP.TEST").unwrap();
        assert_eq!(corp.kdc, ["dc1.corp.test:88", "[::1]:8888", "[::2]:88", "[fe80::1]:88"]);
        assert_eq!(corp.kpasswd(), ["dc1.corp.test:464"]);
        assert!(r.realm("OTHER.REALM").is_none());
        assert!(r.realm("not.a.realm").is_none());
    }

    #[test]
    fn odd_and_hostile_files_never_fail() {
        let bad_values = "[realms]\nR = {\n kdc = \n kdc = host:0\n kdc = host:99999\n kdc = ho st\n kdc = h\u{e9}.test\n kdc = [zz]:88\n kdc = [::1\n kdc = a:b:c\n kdc = \"unterminated\n kdc = x;rm:88\n kdc = not.ok:88 trailing words\n}\n";
        assert_eq!(
            Krb5Realms::parse(bad_values).realm("R").unwrap().kdc,
            ["unterminated:88"]
        );
        let deep = format!(
            "[realms]\n{}R = {{\nkdc = deep:88\n{}",
            "x = {\n".repeat(10_000),
            "}\n".repeat(20_000)
        );
        assert!(Krb5Realms::parse(&deep).realm("R").is_none());
        let many: String = (0..5000).map(|i| format!(" kdc = k{i}.test\n")).collect();
        let r = Krb5Realms::parse(&format!("[realms]\nR = {{\n{many}}}\n"));
        assert_eq!(r.realm("R").unwrap().kdc.len(), MAX_SERVERS);
        let realms: String = (0..5000).map(|i| format!("R{i} = {{\n kdc = k\n}}\n")).collect();
        assert_eq!(
            Krb5Realms::parse(&format!("[realms]\n{realms}")).realms.len(),
            MAX_REALMS
        );
        let long = "a".repeat(300);
        assert!(
            Krb5Realms::parse(&format!("[realms]\nR = {{\nkdc = {long}\n}}"))
                .realm("R")
                .unwrap()
                .kdc
                .is_empty()
        );
        for junk in [
            "",
            "}}}}",
            "[realms",
            "[realms]\n= {\nkdc = x\n}",
            "[realms]\nR = {",
            "\u{0}\u{ffff}[\n=\n{",
        ] {
            let _ = Krb5Realms::parse(junk);
        }
        // An unclosed block still counts (MIT reports a syntax error; the proxy takes what is clear).
        assert_eq!(
            Krb5Realms::parse("[realms]\nR = {\n kdc = k\n").realm("R").unwrap().kdc,
            ["k:88"]
        );
    }

    #[test]
    fn files_are_found_read_bounded_and_merged() {
        let dir = std::env::temp_dir().join(format!("credguard-krb5-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = dir.join("first.conf");
        let second = dir.join("second.conf");
        let big = dir.join("big.conf");
        std::fs::write(&first, "[realms]\nA = {\n kdc = a1\n}\n").unwrap();
        std::fs::write(
            &second,
            b"[realms]\nA = {\n kdc = a2\n}\nB = {\n kdc = b\xff\n kdc = b2\n}\n",
        )
        .unwrap();
        let mut huge = b"[realms]\nC = {\n kdc = c\n}\n".to_vec();
        huge.resize(MAX_FILE_LEN as usize + 1, b'#');
        std::fs::write(&big, huge).unwrap();
        let r = Krb5Realms::load(
            &[first.clone(), dir.join("missing.conf"), second.clone(), big.clone()],
            false,
        );
        assert_eq!(r.realm("a").unwrap().kdc, ["a1:88"], "the first file's entry wins");
        assert_eq!(r.realm("B").unwrap().kdc, ["b2:88"]);
        assert!(r.realm("C").is_none(), "an oversized file is skipped whole");
        std::fs::remove_dir_all(&dir).unwrap();

        let env = std::ffi::OsString::from("/x/one.conf::/x/two.conf");
        assert_eq!(
            krb5_conf_paths(None, Some(&env)),
            (vec!["/x/one.conf".into(), "/x/two.conf".into()], false)
        );
        assert_eq!(
            krb5_conf_paths(Some(Path::new("/etc/k.conf")), Some(&env)),
            (vec!["/etc/k.conf".into()], true)
        );
        assert_eq!(krb5_conf_paths(None, None), (vec![DEFAULT_KRB5_CONF.into()], false));
    }
}
