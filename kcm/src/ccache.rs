//! MIT's credential cache encoding, file format version 4: principals, credentials and whole
//! ccache files.
//!
//! KCM marshals principals and credentials exactly as a v4 FILE ccache stores them (MIT's
//! `k5_marshal_princ` / `k5_marshal_cred` with version 4, in `src/lib/krb5/ccache/ccmarshal.c`):
//! every integer big-endian, every string or blob a 32-bit length then its bytes. The proxy's
//! `KerberosGetServiceTicketReply.ccache` is a whole v4 file (`0x0504`, header tags, the default
//! principal, then credentials), which [`CcacheFile::parse`] reads.
//!
//! Every byte here comes from a local program or from the proxy, so every length is checked
//! against what remains and against a limit before anything is allocated for it, and parsing
//! never panics. A credential's session key is kept in zeroizing memory and never printed.

use std::fmt;

use zeroize::Zeroizing;

/// The first two bytes of a version 4 ccache file.
pub const FILE_VERSION_4: u16 = 0x0504;
/// The realm of MIT's configuration entries (`krb5_ccache_conf_data/<key>@X-CACHECONF:`).
pub const CONFIG_REALM: &str = "X-CACHECONF:";
/// The first component of MIT's configuration entries.
pub const CONFIG_NAME: &str = "krb5_ccache_conf_data";
/// The first component of a ticket-granting service's name.
pub const TGS_NAME: &str = "krbtgt";
/// `KRB5_NT_PRINCIPAL`, the name type of a user principal.
pub const NT_PRINCIPAL: u32 = 1;
/// `KRB5_NT_SRV_INST`, the name type of `krbtgt/REALM`.
pub const NT_SRV_INST: u32 = 2;
/// The `initial` ticket flag (RFC 4120 TicketFlags bit 9, as MIT stores flags).
pub const TKT_FLG_INITIAL: u32 = 0x0040_0000;

/// Components of one principal, at most (real ones have one to three).
pub const MAX_COMPONENTS: usize = 16;
/// Bytes of one realm or name component, at most.
pub const MAX_NAME_PART: usize = 1024;
/// Bytes of one ticket (or second ticket, address, authdata element), at most. KDC replies are
/// at most 64 KiB (the proxy refuses more), so a ticket is smaller.
pub const MAX_BLOB: usize = 64 << 10;
/// Bytes of one session key, at most (the largest enctype's key is 32 bytes).
pub const MAX_KEY: usize = 64;
/// Addresses or authdata elements of one credential, at most.
pub const MAX_LIST: usize = 64;
/// Credentials one ccache file may hold for this daemon to read it (the proxy's hold one).
pub const MAX_FILE_CREDENTIALS: usize = 64;

/// Why bytes are not a valid v4 principal, credential or ccache file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcacheError {
    /// The input ends inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length or count is over its limit.
    #[error("{what} of {len} is over the limit of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its announced length or count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A realm or name component is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// The file is not a version 4 ccache.
    #[error("unsupported ccache file version 0x{0:04x} (only 0x0504 is read)")]
    Version(u16),
    /// Bytes are left after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// The value does not fit its field when encoding.
    #[error("{0} does not fit its field")]
    Overflow(&'static str),
}

/// A bounded cursor over hostile bytes: every read checks what remains first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CcacheError> {
        if n > self.rest.len() {
            return Err(CcacheError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Everything not read yet.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CcacheError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CcacheError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian 16-bit integer.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, CcacheError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian 32-bit integer.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CcacheError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian signed 32-bit integer.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, CcacheError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    /// A count of elements that each take at least `min_size` bytes, checked against `max` and
    /// against what remains, so that no allocation is sized by a hostile count.
    pub fn count(&mut self, what: &'static str, max: usize, min_size: usize) -> Result<usize, CcacheError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(CcacheError::TooLong { what, len: n, max });
        }
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(CcacheError::Truncated(what));
        }
        Ok(n)
    }

    /// A 32-bit length, then that many bytes (at most `max`).
    pub fn data(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], CcacheError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(CcacheError::TooLong { what, len: n, max });
        }
        self.take(n, what)
    }

    /// Like [`Reader::data`], as UTF-8.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, CcacheError> {
        let bytes = self.data(what, max)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CcacheError::NotUtf8(what))
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_data(out: &mut Vec<u8>, d: &[u8]) {
    // Every blob was bounded by a MAX_* limit (far under u32::MAX) when it was parsed or built.
    put_u32(out, u32::try_from(d.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(d);
}

/// A Kerberos principal: name type, realm and name components.
///
/// Two principals are the same when realm and components are (MIT's `krb5_principal_compare`
/// ignores the name type too).
#[derive(Clone, Eq)]
pub struct Principal {
    /// The name type (e.g. [`NT_PRINCIPAL`]).
    pub name_type: u32,
    /// The realm.
    pub realm: String,
    /// The name components (`HTTP`, `web.example.test` for `HTTP/web.example.test`).
    pub components: Vec<String>,
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.realm == other.realm && self.components == other.components
    }
}

impl std::hash::Hash for Principal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.realm.hash(state);
        self.components.hash(state);
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({self})")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // MIT's unparsed form, with its quoting of the separators, so that a hostile component
        // cannot forge another name in a log line; control characters are escaped too.
        let quote = |s: &str, f: &mut fmt::Formatter<'_>| -> fmt::Result {
            for c in s.chars() {
                match c {
                    '/' | '@' | '\\' => write!(f, "\\{c}")?,
                    c if c.is_control() => write!(f, "{}", c.escape_default())?,
                    c => write!(f, "{c}")?,
                }
            }
            Ok(())
        };
        for (i, c) in self.components.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            quote(c, f)?;
        }
        f.write_str("@")?;
        quote(&self.realm, f)
    }
}

impl Principal {
    /// A principal of `components` in `realm`.
    pub fn new(name_type: u32, realm: &str, components: &[&str]) -> Self {
        Principal {
            name_type,
            realm: realm.to_string(),
            components: components.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Parses `name/instance@REALM` (as the proxy reports principals: components split at `/`,
    /// the realm after the last `@`; no quoting).
    pub fn parse(text: &str, name_type: u32) -> Option<Self> {
        let (name, realm) = text.rsplit_once('@')?;
        if name.is_empty() || realm.is_empty() {
            return None;
        }
        let components: Vec<String> = name.split('/').map(str::to_string).collect();
        if components.len() > MAX_COMPONENTS || components.iter().any(|c| c.len() > MAX_NAME_PART) {
            return None;
        }
        Some(Principal {
            name_type,
            realm: realm.to_string(),
            components,
        })
    }

    /// Reads a principal in the v4 encoding.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CcacheError> {
        let name_type = r.u32("principal name type")?;
        // Each component takes at least its 4-byte length.
        let n = r.count("principal components", MAX_COMPONENTS, 4)?;
        let realm = r.string("realm", MAX_NAME_PART)?;
        let mut components = Vec::with_capacity(n);
        for _ in 0..n {
            components.push(r.string("name component", MAX_NAME_PART)?);
        }
        Ok(Principal {
            name_type,
            realm,
            components,
        })
    }

    /// Appends the v4 encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.name_type);
        put_u32(out, u32::try_from(self.components.len()).unwrap_or(u32::MAX));
        put_data(out, self.realm.as_bytes());
        for c in &self.components {
            put_data(out, c.as_bytes());
        }
    }

    /// The v4 encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Bytes of the v4 encoding.
    pub fn encoded_len(&self) -> usize {
        12 + self.realm.len() + self.components.iter().map(|c| 4 + c.len()).sum::<usize>()
    }

    /// Whether this names a ticket-granting service (`krbtgt/...`, in any case): what credguard
    /// never lets out of the enclave.
    pub fn is_tgs(&self) -> bool {
        self.components
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case(TGS_NAME))
    }

    /// Whether this names one of MIT's configuration entries
    /// (`krb5_ccache_conf_data/...@X-CACHECONF:`).
    pub fn is_config(&self) -> bool {
        self.realm == CONFIG_REALM && self.components.first().is_some_and(|c| c == CONFIG_NAME)
    }

    /// The components joined with `/` (`HTTP/web.example.test`): the SPN the proxy takes.
    pub fn spn(&self) -> String {
        self.components.join("/")
    }

    /// Whether `other` has the same components, whatever its realm (MIT's
    /// `krb5_principal_compare_any_realm`).
    pub fn same_name(&self, other: &Principal) -> bool {
        self.components == other.components
    }
}

/// A session key: its encryption type and bytes (wiped when dropped; never printed).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Keyblock {
    /// The encryption type (MIT sign-extends the 16 stored bits).
    pub enctype: i32,
    /// The key bytes.
    pub key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Keyblock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyblock(enctype {}, {} key bytes redacted)",
            self.enctype,
            self.key.len()
        )
    }
}

/// A credential's times, Unix seconds as MIT stores them (32 bits, unsigned on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    /// When the client authenticated.
    pub authtime: u32,
    /// Start of validity.
    pub starttime: u32,
    /// End of validity.
    pub endtime: u32,
    /// Renewable until (0 if not renewable).
    pub renew_till: u32,
}

/// A typed blob: an address (`addrtype`) or an authorization-data element (`ad-type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedData {
    /// The 16-bit type.
    pub kind: u16,
    /// The contents.
    pub data: Vec<u8>,
}

impl TypedData {
    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Self, CcacheError> {
        let kind = r.u16(what)?;
        let data = r.data(what, MAX_BLOB)?.to_vec();
        Ok(TypedData { kind, data })
    }

    fn decode_list(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<Self>, CcacheError> {
        // Each element takes at least 6 bytes (type and length).
        let n = r.count(what, MAX_LIST, 6)?;
        (0..n).map(|_| TypedData::decode(r, what)).collect()
    }

    fn encode_list(list: &[TypedData], out: &mut Vec<u8>) {
        put_u32(out, u32::try_from(list.len()).unwrap_or(u32::MAX));
        for t in list {
            put_u16(out, t.kind);
            put_data(out, &t.data);
        }
    }
}

/// One credential (MIT's `krb5_creds`), in the v4 encoding's field order.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The client principal.
    pub client: Principal,
    /// The server principal.
    pub server: Principal,
    /// The session key.
    pub key: Keyblock,
    /// The times.
    pub times: Times,
    /// Whether the ticket is encrypted in a session key (user-to-user).
    pub is_skey: bool,
    /// Ticket flags.
    pub flags: u32,
    /// Client addresses.
    pub addresses: Vec<TypedData>,
    /// Authorization data.
    pub authdata: Vec<TypedData>,
    /// The ticket, DER (for a configuration entry: the value).
    pub ticket: Vec<u8>,
    /// The second ticket (user-to-user), DER.
    pub second_ticket: Vec<u8>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key or the ticket: only what klist would print.
        f.debug_struct("Credential")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("enctype", &self.key.enctype)
            .field("times", &self.times)
            .field("flags", &format_args!("{:#010x}", self.flags))
            .field("ticket_len", &self.ticket.len())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Reads a credential in the v4 encoding.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CcacheError> {
        let client = Principal::decode(r)?;
        let server = Principal::decode(r)?;
        let enctype = i32::from(r.u16("key enctype")? as i16);
        let key = Zeroizing::new(r.data("session key", MAX_KEY)?.to_vec());
        let times = Times {
            authtime: r.u32("authtime")?,
            starttime: r.u32("starttime")?,
            endtime: r.u32("endtime")?,
            renew_till: r.u32("renew_till")?,
        };
        let is_skey = r.u8("is_skey")? != 0;
        let flags = r.u32("ticket flags")?;
        let addresses = TypedData::decode_list(r, "addresses")?;
        let authdata = TypedData::decode_list(r, "authdata")?;
        let ticket = r.data("ticket", MAX_BLOB)?.to_vec();
        let second_ticket = r.data("second ticket", MAX_BLOB)?.to_vec();
        Ok(Credential {
            client,
            server,
            key: Keyblock { enctype, key },
            times,
            is_skey,
            flags,
            addresses,
            authdata,
            ticket,
            second_ticket,
        })
    }

    /// Reads exactly one credential from `bytes` (nothing may follow it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CcacheError> {
        let mut r = Reader::new(bytes);
        let c = Credential::decode(&mut r)?;
        if !r.is_empty() {
            return Err(CcacheError::Trailing(r.remaining()));
        }
        Ok(c)
    }

    /// Appends the v4 encoding.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CcacheError> {
        let enctype = i16::try_from(self.key.enctype).map_err(|_| CcacheError::Overflow("enctype"))?;
        self.client.encode(out);
        self.server.encode(out);
        put_u16(out, enctype as u16);
        put_data(out, &self.key.key);
        for t in [
            self.times.authtime,
            self.times.starttime,
            self.times.endtime,
            self.times.renew_till,
        ] {
            put_u32(out, t);
        }
        out.push(u8::from(self.is_skey));
        put_u32(out, self.flags);
        TypedData::encode_list(&self.addresses, out);
        TypedData::encode_list(&self.authdata, out);
        put_data(out, &self.ticket);
        put_data(out, &self.second_ticket);
        Ok(())
    }

    /// The v4 encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CcacheError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Bytes of the v4 encoding.
    pub fn encoded_len(&self) -> usize {
        let list = |l: &[TypedData]| 4 + l.iter().map(|t| 6 + t.data.len()).sum::<usize>();
        self.client.encoded_len()
            + self.server.encoded_len()
            + 2
            + 4
            + self.key.key.len()
            + 16
            + 1
            + 4
            + list(&self.addresses)
            + list(&self.authdata)
            + 4
            + self.ticket.len()
            + 4
            + self.second_ticket.len()
    }

    /// Whether this is a ticket-granting ticket (or any `krbtgt/...` entry).
    pub fn is_tgt(&self) -> bool {
        self.server.is_tgs()
    }

    /// Whether this is one of MIT's configuration entries.
    pub fn is_config(&self) -> bool {
        self.server.is_config()
    }

    /// The entry `klist` lists for a TGT that stays in the enclave: `krbtgt/REALM@REALM` for
    /// `client` with the TGT's real times and enctype, and no key and no ticket, so that nothing
    /// in it can be used. MIT's GSS initiator looks for such an entry to decide the cache has
    /// credentials; every real ticket comes from a retrieval the daemon answers.
    pub fn keyless_tgt(client: &Principal, realm: &str, enctype: i32, times: Times) -> Self {
        Credential {
            client: client.clone(),
            server: Principal::new(NT_SRV_INST, realm, &[TGS_NAME, realm]),
            key: Keyblock {
                enctype,
                key: Zeroizing::new(Vec::new()),
            },
            times,
            is_skey: false,
            // Not forwardable: MIT then does not try to delegate a TGT it cannot have.
            flags: TKT_FLG_INITIAL,
            addresses: Vec::new(),
            authdata: Vec::new(),
            ticket: Vec::new(),
            second_ticket: Vec::new(),
        }
    }
}

/// A v4 ccache file: the default principal and its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcacheFile {
    /// The default (client) principal.
    pub principal: Principal,
    /// The credentials, in file order.
    pub credentials: Vec<Credential>,
}

impl CcacheFile {
    /// Parses a whole v4 file: version `0x0504`, the header (tags skipped, within their length),
    /// the default principal, then credentials to the end (at most [`MAX_FILE_CREDENTIALS`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, CcacheError> {
        let mut r = Reader::new(bytes);
        let version = r.u16("file version")?;
        if version != FILE_VERSION_4 {
            return Err(CcacheError::Version(version));
        }
        let header_len = r.u16("header length")? as usize;
        // The header holds tags (e.g. the KDC time offset) this daemon has no use for.
        r.take(header_len, "header")?;
        let principal = Principal::decode(&mut r)?;
        let mut credentials = Vec::new();
        while !r.is_empty() {
            if credentials.len() == MAX_FILE_CREDENTIALS {
                return Err(CcacheError::TooLong {
                    what: "credentials in the file",
                    len: credentials.len() + 1,
                    max: MAX_FILE_CREDENTIALS,
                });
            }
            credentials.push(Credential::decode(&mut r)?);
        }
        Ok(CcacheFile { principal, credentials })
    }

    /// The v4 file bytes (no header tags), as the proxy writes them.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CcacheError> {
        let mut out = Vec::new();
        put_u16(&mut out, FILE_VERSION_4);
        put_u16(&mut out, 0);
        self.principal.encode(&mut out);
        for c in &self.credentials {
            c.encode(&mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A service credential like the ones the proxy returns.
    pub(crate) fn service_cred(client: &str, server: &str, endtime: u32) -> Credential {
        Credential {
            client: Principal::parse(client, NT_PRINCIPAL).unwrap(),
            server: Principal::parse(server, 2).unwrap(),
            key: Keyblock {
                enctype: 18,
                key: Zeroizing::new(vec![7; 32]),
            },
            times: Times {
                authtime: 1000,
                starttime: 1000,
                endtime,
                renew_till: 0,
            },
            is_skey: false,
            flags: 0x0050_0000,
            addresses: Vec::new(),
            authdata: Vec::new(),
            ticket: vec![0x61, 0x03, 0x02, 0x01, 0x05],
            second_ticket: Vec::new(),
        }
    }

    #[test]
    fn principal_bytes_are_mit_v4() {
        // k5_marshal_princ(version 4): type, count, realm, components; all big-endian.
        let p = Principal::new(1, "EX", &["alice"]);
        let expected = [
            0, 0, 0, 1, // name type
            0, 0, 0, 1, // one component
            0, 0, 0, 2, b'E', b'X', // realm
            0, 0, 0, 5, b'a', b'l', b'i', b'c', b'e',
        ];
        assert_eq!(p.to_bytes(), expected);
        assert_eq!(p.encoded_len(), expected.len());
        let back = Principal::decode(&mut Reader::new(&expected)).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.name_type, 1);
    }

    #[test]
    fn credential_bytes_are_mit_v4() {
        let c = Credential {
            client: Principal::new(1, "R", &["a"]),
            server: Principal::new(2, "R", &["h", "s"]),
            key: Keyblock {
                enctype: 17,
                key: Zeroizing::new(vec![0xaa, 0xbb]),
            },
            times: Times {
                authtime: 1,
                starttime: 2,
                endtime: 3,
                renew_till: 4,
            },
            is_skey: false,
            flags: 0x4080_0000,
            addresses: vec![TypedData {
                kind: 2,
                data: vec![127, 0, 0, 1],
            }],
            authdata: Vec::new(),
            ticket: vec![0x61],
            second_ticket: Vec::new(),
        };
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, b'R', 0, 0, 0, 1, b'a'];
        expected.extend([
            0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, b'R', 0, 0, 0, 1, b'h', 0, 0, 0, 1, b's',
        ]);
        expected.extend([0, 17, 0, 0, 0, 2, 0xaa, 0xbb]); // keyblock: 16-bit enctype, data
        expected.extend([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]); // times
        expected.push(0); // is_skey
        expected.extend([0x40, 0x80, 0, 0]); // flags
        expected.extend([0, 0, 0, 1, 0, 2, 0, 0, 0, 4, 127, 0, 0, 1]); // one address
        expected.extend([0, 0, 0, 0]); // no authdata
        expected.extend([0, 0, 0, 1, 0x61]); // ticket
        expected.extend([0, 0, 0, 0]); // no second ticket
        assert_eq!(c.to_bytes().unwrap(), expected);
        assert_eq!(c.encoded_len(), expected.len());
        assert_eq!(Credential::from_bytes(&expected).unwrap(), c);
        // A negative enctype survives (MIT sign-extends the 16 bits).
        let mut neg = c.clone();
        neg.key.enctype = -128;
        assert_eq!(
            Credential::from_bytes(&neg.to_bytes().unwrap()).unwrap().key.enctype,
            -128
        );
    }

    #[test]
    fn parses_a_file_as_the_proxy_writes_it() {
        // The layout of lsa-proxy's `ccache_v4`: 0x0504, no header tags, the client principal,
        // then one credential.
        let cred = service_cred("alice@R", "host/svc@R", 2_000_000_000);
        let mut file = vec![5, 4, 0, 0];
        cred.client.encode(&mut file);
        cred.encode(&mut file).unwrap();
        let parsed = CcacheFile::parse(&file).unwrap();
        assert_eq!(parsed.principal, cred.client);
        assert_eq!(parsed.credentials, vec![cred.clone()]);
        // Header tags (a KDC offset tag, as MIT's kinit writes) are skipped.
        let mut tagged = vec![5, 4, 0, 12, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        tagged.extend_from_slice(&file[4..]);
        assert_eq!(CcacheFile::parse(&tagged).unwrap(), parsed);
        assert_eq!(CcacheFile::parse(&parsed.to_bytes().unwrap()).unwrap(), parsed);
    }

    #[test]
    fn refuses_bad_files() {
        assert_eq!(CcacheFile::parse(&[5, 3, 0, 0]), Err(CcacheError::Version(0x0503)));
        assert!(matches!(
            CcacheFile::parse(&[5, 4, 0, 9, 0]),
            Err(CcacheError::Truncated(_))
        ));
        assert!(matches!(CcacheFile::parse(&[]), Err(CcacheError::Truncated(_))));
        // A huge component count is refused before any allocation.
        let huge = [5, 4, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(CcacheFile::parse(&huge), Err(CcacheError::TooLong { .. })));
        // A length beyond the end.
        let past = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, b'R'];
        assert!(matches!(
            Principal::decode(&mut Reader::new(&past)),
            Err(CcacheError::Truncated("realm"))
        ));
        // Not UTF-8.
        let bad = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        assert_eq!(
            Principal::decode(&mut Reader::new(&bad)),
            Err(CcacheError::NotUtf8("realm"))
        );
        // A credential with a byte after it.
        let mut extra = service_cred("a@R", "b@R", 5).to_bytes().unwrap();
        extra.push(0);
        assert_eq!(Credential::from_bytes(&extra), Err(CcacheError::Trailing(1)));
    }

    #[test]
    fn every_truncation_of_a_credential_is_an_error() {
        let bytes = service_cred("alice@R", "HTTP/web@R", 9).to_bytes().unwrap();
        for n in 0..bytes.len() {
            assert!(Credential::from_bytes(&bytes[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn keyless_tgt_has_no_key_and_no_ticket() {
        let alice = Principal::new(1, "R", &["alice"]);
        let times = Times {
            authtime: 10,
            starttime: 10,
            endtime: 20,
            renew_till: 30,
        };
        let t = Credential::keyless_tgt(&alice, "R", 18, times);
        assert!(t.is_tgt() && !t.is_config());
        assert_eq!(t.server.to_string(), "krbtgt/R@R");
        assert!(t.key.key.is_empty() && t.ticket.is_empty());
        assert_eq!((t.key.enctype, t.times), (18, times));
    }

    #[test]
    fn names_and_kinds() {
        let conf = Principal::new(0, CONFIG_REALM, &[CONFIG_NAME, "start_realm"]);
        assert!(conf.is_config() && !conf.is_tgs());
        assert!(Principal::new(2, "R", &["KRBTGT", "R"]).is_tgs());
        assert!(!Principal::new(2, "R", &["HTTP", "krbtgt"]).is_tgs());
        let p = Principal::parse("HTTP/web.example.test@EXAMPLE.TEST", 2).unwrap();
        assert_eq!(p.spn(), "HTTP/web.example.test");
        assert_eq!(p.to_string(), "HTTP/web.example.test@EXAMPLE.TEST");
        assert!(Principal::parse("noatsign", 1).is_none());
        // Display quotes what could forge another name in a log.
        let forged = Principal::new(1, "R", &["a@EVIL\nline"]);
        assert_eq!(forged.to_string(), "a\\@EVIL\\nline@R");
        // Debug of a credential shows neither key nor ticket.
        let c = service_cred("alice@R", "HTTP/web@R", 9);
        let shown = format!("{c:?} {:?}", c.key);
        assert!(!shown.contains("7, 7") && !shown.contains("97"), "{shown}");
    }
}
