//! The Heimdal KCM protocol, as MIT krb5's client (`src/lib/krb5/ccache/cc_kcm.c`) speaks it on
//! a Unix socket.
//!
//! A request is framed `len(4) | body` and its body is `major(1) = 2 | minor(1) = 0 |
//! opcode(2) | fields`. A reply is framed `len(4) | status(4) = 0 | code(4) | payload`, where
//! `len` counts the code and the payload, and the status is the Heimdal IPC layer's (always 0
//! here: a KCM error goes in `code`). Integers are big-endian; names are zero-terminated strings;
//! principals and credentials are in the v4 ccache encoding ([`crate::ccache`]); UUIDs are 16
//! bytes, and UUID lists run to the end of the reply.
//!
//! [`Request::parse`] reads a body from any local program: every length is checked, nothing may
//! follow the last field, and no input makes it panic.

use crate::ccache::{CcacheError, Credential, MAX_BLOB, MAX_KEY, Principal, Reader, Times, TypedData};

/// The protocol's major version.
pub const VERSION_MAJOR: u8 = 2;
/// The protocol's minor version.
pub const VERSION_MINOR: u8 = 0;
/// Bytes of a request body, at most. MIT's largest requests (`REPLACE` of a whole cache) are a
/// few KiB per credential.
pub const MAX_REQUEST_LEN: usize = 1 << 20;
/// Bytes of a cache name, at most (without its terminating zero).
pub const MAX_NAME_LEN: usize = 255;
/// Credentials one `REPLACE` may carry, at most.
pub const MAX_REPLACE_CREDENTIALS: usize = 256;
/// Bytes of a UUID.
pub const UUID_LEN: usize = 16;

/// A cache or credential identifier.
pub type Uuid = [u8; UUID_LEN];

/// MIT krb5 error codes a KCM reply carries (`src/lib/krb5/error_tables/krb5_err.et`, table base
/// -1765328384).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// "Credential cache name malformed".
    pub const KRB5_CC_BADNAME: i32 = -1765328245;
    /// "Matching credential not found".
    pub const KRB5_CC_NOTFOUND: i32 = -1765328243;
    /// "End of credential cache reached".
    pub const KRB5_CC_END: i32 = -1765328242;
    /// "Cannot contact any KDC for requested realm".
    pub const KRB5_KDC_UNREACH: i32 = -1765328228;
    /// "Credentials cache permissions incorrect".
    pub const KRB5_FCC_PERM: i32 = -1765328190;
    /// "No credentials cache found".
    pub const KRB5_FCC_NOFILE: i32 = -1765328189;
    /// "Internal credentials cache error": what Heimdal's daemon answers to an opcode it does
    /// not implement, and what MIT takes as "unsupported".
    pub const KRB5_FCC_INTERNAL: i32 = -1765328188;
    /// "No more memory to allocate (in credentials cache code)".
    pub const KRB5_CC_NOMEM: i32 = -1765328186;
    /// "Bad format in credentials cache".
    pub const KRB5_CC_FORMAT: i32 = -1765328185;
    /// "Ccache function not supported: not implemented".
    pub const KRB5_CC_NOSUPP: i32 = -1765328137;
    /// The base of the KDC's own error codes (`KRB5KDC_ERR_NONE`): a KRB-ERROR code `n` is
    /// `KDC_ERROR_BASE + n`.
    pub const KDC_ERROR_BASE: i32 = -1765328384;
}

/// Heimdal flag bits of `RETRIEVE` and `REMOVE_CRED` (`KCM_TC_*` and `KCM_GC_*` in MIT's
/// `src/include/kcm.h`).
pub mod flags {
    /// "Only look in the cache": MIT always sets it. This daemon fetches on a miss anyway: the
    /// client has no TGT to do the TGS exchange itself.
    pub const GC_CACHED: u32 = 1 << 0;
    /// Compare the server's name without its realm.
    pub const TC_MATCH_SRV_NAMEONLY: u32 = 1 << 29;
    /// The session key's enctype must be the requested one.
    pub const TC_MATCH_KEYTYPE: u32 = 1 << 30;
    /// The ticket flags must be exactly the requested ones.
    pub const TC_MATCH_FLAGS_EXACT: u32 = 1 << 28;
    /// The ticket flags must include the requested ones.
    pub const TC_MATCH_FLAGS: u32 = 1 << 27;
    /// The times must be exactly the requested ones.
    pub const TC_MATCH_TIMES_EXACT: u32 = 1 << 26;
    /// The credential must last at least as long as requested.
    pub const TC_MATCH_TIMES: u32 = 1 << 25;
    /// The authorization data must be the requested one.
    pub const TC_MATCH_AUTHDATA: u32 = 1 << 24;
    /// The second ticket must be the requested one.
    pub const TC_MATCH_2ND_TKT: u32 = 1 << 23;
    /// `is_skey` must be the requested one.
    pub const TC_MATCH_IS_SKEY: u32 = 1 << 22;
}

/// The opcodes of `src/include/kcm.h` (Heimdal's, then MIT's extensions from 13000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Does nothing.
    Noop = 0,
    /// Unused by MIT and sssd.
    GetName = 1,
    /// Unused by MIT and sssd.
    Resolve = 2,
    /// `() -> (name)`: a new unique cache name.
    GenNew = 3,
    /// `(name, princ) -> ()`: empties the cache and sets its principal.
    Initialize = 4,
    /// `(name) -> ()`.
    Destroy = 5,
    /// `(name, cred) -> ()`.
    Store = 6,
    /// `(name, flags, credtag) -> (cred)`.
    Retrieve = 7,
    /// `(name) -> (princ)`.
    GetPrincipal = 8,
    /// `(name) -> (uuid, ...)`.
    GetCredUuidList = 9,
    /// `(name, uuid) -> (cred)`.
    GetCredByUuid = 10,
    /// `(name, flags, credtag) -> ()`.
    RemoveCred = 11,
    /// Unused by MIT and sssd.
    SetFlags = 12,
    /// Unused by MIT and sssd.
    Chown = 13,
    /// Unused by MIT and sssd.
    Chmod = 14,
    /// Unused by MIT and sssd.
    GetInitialTicket = 15,
    /// Unused by MIT and sssd.
    GetTicket = 16,
    /// Unused by MIT and sssd.
    MoveCache = 17,
    /// `() -> (uuid, ...)`.
    GetCacheUuidList = 18,
    /// `(uuid) -> (name)`.
    GetCacheByUuid = 19,
    /// `() -> (name)`.
    GetDefaultCache = 20,
    /// `(name) -> ()`.
    SetDefaultCache = 21,
    /// `(name) -> (offset)`.
    GetKdcOffset = 22,
    /// `(name, offset) -> ()`.
    SetKdcOffset = 23,
    /// MIT: `(name) -> (count, count * (len, cred))`.
    GetCredList = 13001,
    /// MIT: `(name, offset, princ, count, count * (len, cred)) -> ()`.
    Replace = 13002,
}

impl Opcode {
    /// The opcode numbered `n`, if this daemon knows its name.
    pub fn from_u16(n: u16) -> Option<Self> {
        use Opcode::*;
        Some(match n {
            0 => Noop,
            1 => GetName,
            2 => Resolve,
            3 => GenNew,
            4 => Initialize,
            5 => Destroy,
            6 => Store,
            7 => Retrieve,
            8 => GetPrincipal,
            9 => GetCredUuidList,
            10 => GetCredByUuid,
            11 => RemoveCred,
            12 => SetFlags,
            13 => Chown,
            14 => Chmod,
            15 => GetInitialTicket,
            16 => GetTicket,
            17 => MoveCache,
            18 => GetCacheUuidList,
            19 => GetCacheByUuid,
            20 => GetDefaultCache,
            21 => SetDefaultCache,
            22 => GetKdcOffset,
            23 => SetKdcOffset,
            13001 => GetCredList,
            13002 => Replace,
            _ => return None,
        })
    }
}

/// Why a request body is not a valid KCM request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame announces more than [`MAX_REQUEST_LEN`] bytes.
    #[error("a request of {0} bytes is over the limit of {MAX_REQUEST_LEN} bytes")]
    TooLarge(usize),
    /// The protocol version is not 2.x.
    #[error("protocol version {0}.{1} (only 2.x is spoken)")]
    Version(u8, u8),
    /// A cache name has no terminating zero.
    #[error("a cache name without its terminating zero")]
    UnterminatedName,
    /// A cache name is empty, too long, not UTF-8 or has control characters.
    #[error("a malformed cache name")]
    BadName,
    /// A principal or credential field is malformed.
    #[error(transparent)]
    Field(#[from] CcacheError),
}

impl ProtocolError {
    /// The KCM error code that answers it.
    pub fn code(&self) -> i32 {
        match self {
            ProtocolError::Version(..) => code::KRB5_FCC_INTERNAL,
            ProtocolError::BadName | ProtocolError::UnterminatedName => code::KRB5_CC_BADNAME,
            ProtocolError::TooLarge(_) | ProtocolError::Field(_) => code::KRB5_CC_FORMAT,
        }
    }
}

/// The "matching credential" of `RETRIEVE` and `REMOVE_CRED` (MIT's `k5_marshal_mcred`): a header
/// of which fields are present, then those fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchCred {
    /// The client, if given.
    pub client: Option<Principal>,
    /// The server, if given.
    pub server: Option<Principal>,
    /// The session key's enctype, if given (its bytes are never compared).
    pub enctype: Option<i32>,
    /// The times.
    pub times: Times,
    /// `is_skey`.
    pub is_skey: bool,
    /// Ticket flags.
    pub flags: u32,
    /// Addresses, if given.
    pub addresses: Option<Vec<TypedData>>,
    /// Authorization data, if given.
    pub authdata: Option<Vec<TypedData>>,
    /// The ticket, if given.
    pub ticket: Option<Vec<u8>>,
    /// The second ticket, if given.
    pub second_ticket: Option<Vec<u8>>,
}

/// Header bits of a [`MatchCred`] (`SC_*` in MIT's `ccmarshal.c`).
mod sc {
    pub const CLIENT_PRINCIPAL: u32 = 0x0001;
    pub const SERVER_PRINCIPAL: u32 = 0x0002;
    pub const SESSION_KEY: u32 = 0x0004;
    pub const TICKET: u32 = 0x0008;
    pub const SECOND_TICKET: u32 = 0x0010;
    pub const AUTHDATA: u32 = 0x0020;
    pub const ADDRESSES: u32 = 0x0040;
}

fn typed_list(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<TypedData>, CcacheError> {
    let n = r.count(what, crate::ccache::MAX_LIST, 6)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.u16(what)?;
        out.push(TypedData {
            kind,
            data: r.data(what, MAX_BLOB)?.to_vec(),
        });
    }
    Ok(out)
}

impl MatchCred {
    /// Reads a matching credential.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CcacheError> {
        let header = r.u32("match header")?;
        let has = |bit| header & bit != 0;
        let client = has(sc::CLIENT_PRINCIPAL).then(|| Principal::decode(r)).transpose()?;
        let server = has(sc::SERVER_PRINCIPAL).then(|| Principal::decode(r)).transpose()?;
        let enctype = if has(sc::SESSION_KEY) {
            let e = i32::from(r.u16("match enctype")? as i16);
            r.data("match key", MAX_KEY)?;
            Some(e)
        } else {
            None
        };
        let times = Times {
            authtime: r.u32("match authtime")?,
            starttime: r.u32("match starttime")?,
            endtime: r.u32("match endtime")?,
            renew_till: r.u32("match renew_till")?,
        };
        let is_skey = r.u8("match is_skey")? != 0;
        let flags = r.u32("match flags")?;
        let addresses = has(sc::ADDRESSES)
            .then(|| typed_list(r, "match addresses"))
            .transpose()?;
        let authdata = has(sc::AUTHDATA).then(|| typed_list(r, "match authdata")).transpose()?;
        let ticket = has(sc::TICKET)
            .then(|| r.data("match ticket", MAX_BLOB).map(<[u8]>::to_vec))
            .transpose()?;
        let second_ticket = has(sc::SECOND_TICKET)
            .then(|| r.data("match second ticket", MAX_BLOB).map(<[u8]>::to_vec))
            .transpose()?;
        Ok(MatchCred {
            client,
            server,
            enctype,
            times,
            is_skey,
            flags,
            addresses,
            authdata,
            ticket,
            second_ticket,
        })
    }

    /// Appends the encoding MIT's client sends (for tests and tools).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut header = 0;
        for (present, bit) in [
            (self.client.is_some(), sc::CLIENT_PRINCIPAL),
            (self.server.is_some(), sc::SERVER_PRINCIPAL),
            (self.enctype.is_some(), sc::SESSION_KEY),
            (self.ticket.is_some(), sc::TICKET),
            (self.second_ticket.is_some(), sc::SECOND_TICKET),
            (self.authdata.is_some(), sc::AUTHDATA),
            (self.addresses.is_some(), sc::ADDRESSES),
        ] {
            if present {
                header |= bit;
            }
        }
        out.extend_from_slice(&header.to_be_bytes());
        if let Some(c) = &self.client {
            c.encode(out);
        }
        if let Some(s) = &self.server {
            s.encode(out);
        }
        if let Some(e) = self.enctype {
            out.extend_from_slice(&(e as i16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        for t in [
            self.times.authtime,
            self.times.starttime,
            self.times.endtime,
            self.times.renew_till,
        ] {
            out.extend_from_slice(&t.to_be_bytes());
        }
        out.push(u8::from(self.is_skey));
        out.extend_from_slice(&self.flags.to_be_bytes());
        for list in [&self.addresses, &self.authdata].into_iter().flatten() {
            out.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for t in list {
                out.extend_from_slice(&t.kind.to_be_bytes());
                out.extend_from_slice(&(t.data.len() as u32).to_be_bytes());
                out.extend_from_slice(&t.data);
            }
        }
        for blob in [&self.ticket, &self.second_ticket].into_iter().flatten() {
            out.extend_from_slice(&(blob.len() as u32).to_be_bytes());
            out.extend_from_slice(blob);
        }
    }

    /// Whether `cred` matches this under the `KCM_TC_*` bits of `which`, as MIT's
    /// `krb5int_cc_creds_match_request` decides for its own caches.
    pub fn matches(&self, which: u32, cred: &Credential) -> bool {
        let has = |bit| which & bit != 0;
        if self.client.as_ref().is_some_and(|c| *c != cred.client) {
            return false;
        }
        if let Some(server) = &self.server {
            let same = if has(flags::TC_MATCH_SRV_NAMEONLY) {
                server.same_name(&cred.server)
            } else {
                *server == cred.server
            };
            if !same {
                return false;
            }
        }
        // A user-to-user credential only when asked for: its ticket is no service ticket.
        let is_skey = has(flags::TC_MATCH_IS_SKEY) && self.is_skey;
        if cred.is_skey != is_skey {
            return false;
        }
        if has(flags::TC_MATCH_FLAGS_EXACT) && self.flags != cred.flags {
            return false;
        }
        if has(flags::TC_MATCH_FLAGS) && cred.flags & self.flags != self.flags {
            return false;
        }
        if has(flags::TC_MATCH_TIMES_EXACT) && self.times != cred.times {
            return false;
        }
        if has(flags::TC_MATCH_TIMES) && !lasts_long_enough(&self.times, &cred.times) {
            return false;
        }
        let no_authdata: &[TypedData] = &[];
        if has(flags::TC_MATCH_AUTHDATA) && self.authdata.as_deref().unwrap_or(no_authdata) != cred.authdata {
            return false;
        }
        let no_ticket: &[u8] = &[];
        if has(flags::TC_MATCH_2ND_TKT) && self.second_ticket.as_deref().unwrap_or(no_ticket) != cred.second_ticket {
            return false;
        }
        if has(flags::TC_MATCH_KEYTYPE) && self.enctype.unwrap_or(0) != cred.key.enctype {
            return false;
        }
        true
    }
}

/// MIT's `times_match`: the credential ends (and is renewable) no earlier than requested.
fn lasts_long_enough(wanted: &Times, got: &Times) -> bool {
    (wanted.renew_till == 0 || wanted.renew_till <= got.renew_till)
        && (wanted.endtime == 0 || wanted.endtime <= got.endtime)
}

/// A parsed KCM request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `NOOP`.
    Noop,
    /// `GEN_NEW`.
    GenNew,
    /// `INITIALIZE`.
    Initialize {
        /// The cache.
        name: String,
        /// Its new principal.
        principal: Principal,
    },
    /// `DESTROY`.
    Destroy {
        /// The cache.
        name: String,
    },
    /// `STORE`.
    Store {
        /// The cache.
        name: String,
        /// The credential.
        cred: Box<Credential>,
    },
    /// `RETRIEVE`.
    Retrieve {
        /// The cache.
        name: String,
        /// `KCM_TC_*` / `KCM_GC_*` bits.
        flags: u32,
        /// What to match.
        tag: Box<MatchCred>,
    },
    /// `GET_PRINCIPAL`.
    GetPrincipal {
        /// The cache.
        name: String,
    },
    /// `GET_CRED_UUID_LIST`.
    GetCredUuidList {
        /// The cache.
        name: String,
    },
    /// `GET_CRED_BY_UUID`.
    GetCredByUuid {
        /// The cache.
        name: String,
        /// The credential.
        uuid: Uuid,
    },
    /// `REMOVE_CRED`.
    RemoveCred {
        /// The cache.
        name: String,
        /// `KCM_TC_*` bits.
        flags: u32,
        /// What to match.
        tag: Box<MatchCred>,
    },
    /// `GET_CACHE_UUID_LIST`.
    GetCacheUuidList,
    /// `GET_CACHE_BY_UUID`.
    GetCacheByUuid {
        /// The cache.
        uuid: Uuid,
    },
    /// `GET_DEFAULT_CACHE`.
    GetDefaultCache,
    /// `SET_DEFAULT_CACHE`.
    SetDefaultCache {
        /// The cache.
        name: String,
    },
    /// `GET_KDC_OFFSET`.
    GetKdcOffset {
        /// The cache.
        name: String,
    },
    /// `SET_KDC_OFFSET`.
    SetKdcOffset {
        /// The cache.
        name: String,
        /// Seconds the KDC's clock is ahead of ours.
        offset: i32,
    },
    /// `GET_CRED_LIST` (MIT).
    GetCredList {
        /// The cache.
        name: String,
    },
    /// `REPLACE` (MIT).
    Replace {
        /// The cache.
        name: String,
        /// The KDC time offset.
        offset: i32,
        /// The new principal.
        principal: Principal,
        /// The new credentials.
        creds: Vec<Credential>,
    },
    /// An opcode this daemon does not implement (answered [`code::KRB5_FCC_INTERNAL`], which MIT
    /// takes as "unsupported").
    Unsupported(u16),
}

/// Reads a zero-terminated cache name.
fn name(r: &mut Reader<'_>) -> Result<String, ProtocolError> {
    let rest = r.clone().take_rest();
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or(ProtocolError::UnterminatedName)?;
    let bytes = r.take(end + 1, "cache name")?;
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| ProtocolError::BadName)?;
    if text.is_empty() || text.len() > MAX_NAME_LEN || text.chars().any(char::is_control) {
        return Err(ProtocolError::BadName);
    }
    Ok(text.to_string())
}

fn uuid(r: &mut Reader<'_>) -> Result<Uuid, ProtocolError> {
    Ok(r.array::<UUID_LEN>("uuid")?)
}

/// A credential behind a 32-bit length (`GET_CRED_LIST`, `REPLACE`).
fn sized_credential(r: &mut Reader<'_>) -> Result<Credential, ProtocolError> {
    let bytes = r.data("credential", MAX_REQUEST_LEN)?;
    Ok(Credential::from_bytes(bytes)?)
}

impl Request {
    /// Parses a request body (the bytes after the frame's length).
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(ProtocolError::TooLarge(body.len()));
        }
        let mut r = Reader::new(body);
        let (major, minor) = (r.u8("version")?, r.u8("version")?);
        if major != VERSION_MAJOR {
            return Err(ProtocolError::Version(major, minor));
        }
        let opcode = r.u16("opcode")?;
        let Some(op) = Opcode::from_u16(opcode) else {
            return Ok(Request::Unsupported(opcode));
        };
        let req = Self::parse_fields(op, &mut r)?;
        // An unsupported opcode's fields are not read: it is answered "unsupported" whatever
        // they are.
        if !r.is_empty() && !matches!(req, Request::Unsupported(_)) {
            return Err(CcacheError::Trailing(r.remaining()).into());
        }
        Ok(req)
    }

    fn parse_fields(op: Opcode, r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        use Opcode as O;
        Ok(match op {
            O::Noop => Request::Noop,
            O::GenNew => Request::GenNew,
            O::Initialize => Request::Initialize {
                name: name(r)?,
                principal: Principal::decode(r)?,
            },
            O::Destroy => Request::Destroy { name: name(r)? },
            O::Store => Request::Store {
                name: name(r)?,
                cred: Box::new(Credential::decode(r)?),
            },
            O::Retrieve | O::RemoveCred => {
                let name = name(r)?;
                let flags = r.u32("flags")?;
                let tag = Box::new(MatchCred::decode(r)?);
                if op == O::Retrieve {
                    Request::Retrieve { name, flags, tag }
                } else {
                    Request::RemoveCred { name, flags, tag }
                }
            }
            O::GetPrincipal => Request::GetPrincipal { name: name(r)? },
            O::GetCredUuidList => Request::GetCredUuidList { name: name(r)? },
            O::GetCredByUuid => Request::GetCredByUuid {
                name: name(r)?,
                uuid: uuid(r)?,
            },
            O::GetCacheUuidList => Request::GetCacheUuidList,
            O::GetCacheByUuid => Request::GetCacheByUuid { uuid: uuid(r)? },
            O::GetDefaultCache => Request::GetDefaultCache,
            O::SetDefaultCache => Request::SetDefaultCache { name: name(r)? },
            O::GetKdcOffset => Request::GetKdcOffset { name: name(r)? },
            O::SetKdcOffset => Request::SetKdcOffset {
                name: name(r)?,
                offset: r.i32("kdc offset")?,
            },
            O::GetCredList => Request::GetCredList { name: name(r)? },
            O::Replace => {
                let name = name(r)?;
                let offset = r.i32("kdc offset")?;
                let principal = Principal::decode(r)?;
                // Each credential takes at least its 4-byte length.
                let n = r.count("credentials", MAX_REPLACE_CREDENTIALS, 4)?;
                let creds = (0..n).map(|_| sized_credential(r)).collect::<Result<_, _>>()?;
                Request::Replace {
                    name,
                    offset,
                    principal,
                    creds,
                }
            }
            O::GetName
            | O::Resolve
            | O::SetFlags
            | O::Chown
            | O::Chmod
            | O::GetInitialTicket
            | O::GetTicket
            | O::MoveCache => Request::Unsupported(op as u16),
        })
    }

    /// The opcode's name, for logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Noop => "NOOP",
            Request::GenNew => "GEN_NEW",
            Request::Initialize { .. } => "INITIALIZE",
            Request::Destroy { .. } => "DESTROY",
            Request::Store { .. } => "STORE",
            Request::Retrieve { .. } => "RETRIEVE",
            Request::GetPrincipal { .. } => "GET_PRINCIPAL",
            Request::GetCredUuidList { .. } => "GET_CRED_UUID_LIST",
            Request::GetCredByUuid { .. } => "GET_CRED_BY_UUID",
            Request::RemoveCred { .. } => "REMOVE_CRED",
            Request::GetCacheUuidList => "GET_CACHE_UUID_LIST",
            Request::GetCacheByUuid { .. } => "GET_CACHE_BY_UUID",
            Request::GetDefaultCache => "GET_DEFAULT_CACHE",
            Request::SetDefaultCache { .. } => "SET_DEFAULT_CACHE",
            Request::GetKdcOffset { .. } => "GET_KDC_OFFSET",
            Request::SetKdcOffset { .. } => "SET_KDC_OFFSET",
            Request::GetCredList { .. } => "GET_CRED_LIST",
            Request::Replace { .. } => "REPLACE",
            Request::Unsupported(_) => "unsupported",
        }
    }
}

/// Builds request bodies as MIT's client does (`kcmreq_init` and the per-opcode fields): for
/// tests and for tools that speak to the daemon.
#[derive(Debug)]
pub struct RequestBuilder {
    body: Vec<u8>,
}

impl RequestBuilder {
    /// A request for `op`, naming cache `name` if given.
    pub fn new(op: Opcode, name: Option<&str>) -> Self {
        let mut body = vec![VERSION_MAJOR, VERSION_MINOR];
        body.extend_from_slice(&(op as u16).to_be_bytes());
        if let Some(n) = name {
            body.extend_from_slice(n.as_bytes());
            body.push(0);
        }
        RequestBuilder { body }
    }

    /// Appends a big-endian 32-bit integer.
    pub fn u32(mut self, v: u32) -> Self {
        self.body.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes (a UUID, an encoded principal or credential).
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.body.extend_from_slice(b);
        self
    }

    /// The body.
    pub fn body(self) -> Vec<u8> {
        self.body
    }

    /// The body, framed with its length as sent on the socket.
    pub fn frame(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.body.len());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A reply: the KCM code and, on success, its payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// [`code::OK`] or an MIT error code.
    pub code: i32,
    /// The reply's fields.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A payload may hold a session key: its length only.
        write!(f, "Reply(code {}, {} payload bytes)", self.code, self.payload.len())
    }
}

impl Reply {
    /// Success with `payload`.
    pub fn ok(payload: Vec<u8>) -> Self {
        Reply {
            code: code::OK,
            payload,
        }
    }

    /// Failure with `code`.
    pub fn error(code: i32) -> Self {
        Reply {
            code,
            payload: Vec::new(),
        }
    }

    /// Success with a zero-terminated name.
    pub fn name(name: &str) -> Self {
        let mut payload = Vec::with_capacity(name.len() + 1);
        payload.extend_from_slice(name.as_bytes());
        payload.push(0);
        Reply::ok(payload)
    }

    /// The frame on the socket: `len(4) | status 0 (4) | code (4) | payload`, `len` counting
    /// the code and the payload (MIT's `kcmio_unix_socket_read`).
    pub fn frame(&self) -> Vec<u8> {
        let len = u32::try_from(4 + self.payload.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(12 + self.payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.code.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a frame as MIT's client does (for tests and tools): the status and code must be
    /// there and `len` must match.
    pub fn parse_frame(frame: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(frame);
        let len = r.u32("reply length")? as usize;
        let status = r.u32("reply status")?;
        if status != 0 {
            return Ok(Reply::error(status as i32));
        }
        let body = r.take(len, "reply")?;
        if !r.is_empty() {
            return Err(CcacheError::Trailing(r.remaining()).into());
        }
        let mut b = Reader::new(body);
        let code = b.i32("reply code")?;
        Ok(Reply {
            code,
            payload: b.take_rest().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccache::tests::service_cred;

    fn princ(s: &str) -> Principal {
        Principal::parse(s, 1).unwrap()
    }

    #[test]
    fn reply_frame_is_what_mit_reads() {
        // kcmserver.py: struct.pack('>LL', len(kcm_response), 0) + pack('>l', code) + payload.
        let r = Reply::name("1000");
        assert_eq!(
            r.frame(),
            [0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, b'1', b'0', b'0', b'0', 0]
        );
        let e = Reply::error(code::KRB5_CC_NOTFOUND);
        assert_eq!(e.frame(), [0, 0, 0, 4, 0, 0, 0, 0, 0x96, 0xc7, 0x3a, 0x8d]);
        assert_eq!(Reply::parse_frame(&e.frame()).unwrap(), e);
        assert_eq!(Reply::parse_frame(&r.frame()).unwrap(), r);
    }

    #[test]
    fn error_codes_are_mit_table_entries() {
        // krb5_err.et: base -1765328384; CC_NOTFOUND is entry 141, FCC_INTERNAL 196, ...
        let base = code::KDC_ERROR_BASE;
        assert_eq!(code::KRB5_CC_NOTFOUND, base + 141);
        assert_eq!(code::KRB5_CC_END, base + 142);
        assert_eq!(code::KRB5_KDC_UNREACH, base + 156);
        assert_eq!(code::KRB5_FCC_PERM, base + 194);
        assert_eq!(code::KRB5_FCC_NOFILE, base + 195);
        assert_eq!(code::KRB5_FCC_INTERNAL, base + 196);
        assert_eq!(code::KRB5_CC_NOMEM, base + 198);
        assert_eq!(code::KRB5_CC_FORMAT, base + 199);
        assert_eq!(code::KRB5_CC_NOSUPP, base + 247);
        assert_eq!(code::KRB5_CC_BADNAME, base + 139);
    }

    #[test]
    fn get_default_cache_request_bytes() {
        // kcmreq_init: major 2, minor 0, 16-bit opcode; no name.
        let body = RequestBuilder::new(Opcode::GetDefaultCache, None).body();
        assert_eq!(body, [2, 0, 0, 20]);
        assert_eq!(Request::parse(&body).unwrap(), Request::GetDefaultCache);
        let framed = RequestBuilder::new(Opcode::GetPrincipal, Some("1000")).frame();
        assert_eq!(framed, [0, 0, 0, 9, 2, 0, 0, 8, b'1', b'0', b'0', b'0', 0]);
    }

    #[test]
    fn retrieve_round_trip_as_mit_marshals_it() {
        // kcm_retrieve: name, flags | KCM_GC_CACHED, then k5_marshal_mcred of (client, server,
        // endtime = now) with no key, ticket or authdata.
        let tag = MatchCred {
            client: Some(princ("alice@R")),
            server: Some(Principal::parse("HTTP/web@R", 2).unwrap()),
            times: Times {
                endtime: 1234,
                ..Times::default()
            },
            ..MatchCred::default()
        };
        let mut mcred = Vec::new();
        tag.encode(&mut mcred);
        assert_eq!(&mcred[..4], &[0, 0, 0, 3]); // SC_CLIENT_PRINCIPAL | SC_SERVER_PRINCIPAL
        let flags = flags::TC_MATCH_TIMES | flags::GC_CACHED;
        let body = RequestBuilder::new(Opcode::Retrieve, Some("1000"))
            .u32(flags)
            .bytes(&mcred)
            .body();
        // endtime, renew_till, is_skey, ticket flags: the end of the body.
        let expect_tail = [0, 0, 4, 0xd2, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(&body[body.len() - expect_tail.len()..], &expect_tail);
        let parsed = Request::parse(&body).unwrap();
        assert_eq!(
            parsed,
            Request::Retrieve {
                name: "1000".into(),
                flags,
                tag: Box::new(tag),
            }
        );
    }

    #[test]
    fn store_replace_and_list_requests_parse() {
        let cred = service_cred("alice@R", "HTTP/web@R", 99);
        let bytes = cred.to_bytes().unwrap();
        let store = RequestBuilder::new(Opcode::Store, Some("1000:1")).bytes(&bytes).body();
        assert_eq!(
            Request::parse(&store).unwrap(),
            Request::Store {
                name: "1000:1".into(),
                cred: Box::new(cred.clone())
            }
        );
        let mut replace = RequestBuilder::new(Opcode::Replace, Some("x"))
            .u32(-5i32 as u32)
            .bytes(&princ("alice@R").to_bytes())
            .u32(2);
        for _ in 0..2 {
            replace = replace.u32(bytes.len() as u32).bytes(&bytes);
        }
        match Request::parse(&replace.body()).unwrap() {
            Request::Replace {
                name,
                offset,
                principal,
                creds,
            } => {
                assert_eq!((name.as_str(), offset), ("x", -5));
                assert_eq!(principal, princ("alice@R"));
                assert_eq!(creds, vec![cred.clone(), cred]);
            }
            other => panic!("{other:?}"),
        }
        let uuid = [9u8; 16];
        let by_uuid = RequestBuilder::new(Opcode::GetCredByUuid, Some("n"))
            .bytes(&uuid)
            .body();
        assert_eq!(
            Request::parse(&by_uuid).unwrap(),
            Request::GetCredByUuid { name: "n".into(), uuid }
        );
        let offset = RequestBuilder::new(Opcode::SetKdcOffset, Some("n")).u32(7).body();
        assert_eq!(
            Request::parse(&offset).unwrap(),
            Request::SetKdcOffset {
                name: "n".into(),
                offset: 7
            }
        );
    }

    #[test]
    fn bad_requests_are_errors_with_codes() {
        assert_eq!(Request::parse(&[1, 0, 0, 20]), Err(ProtocolError::Version(1, 0)));
        assert_eq!(Request::parse(&[2, 0, 0, 20, 0]), Err(CcacheError::Trailing(1).into()));
        assert_eq!(
            Request::parse(&[2, 0, 0, 8, b'a']),
            Err(ProtocolError::UnterminatedName)
        );
        assert_eq!(Request::parse(&[2, 0, 0, 8, 0]), Err(ProtocolError::BadName));
        assert_eq!(Request::parse(&[2, 0, 0, 8, b'\n', 0]), Err(ProtocolError::BadName));
        assert_eq!(Request::parse(&[2, 0, 0, 8, 0xff, 0]), Err(ProtocolError::BadName));
        let long = RequestBuilder::new(Opcode::GetPrincipal, Some(&"a".repeat(MAX_NAME_LEN + 1))).body();
        assert_eq!(Request::parse(&long), Err(ProtocolError::BadName));
        assert_eq!(Request::parse(&[2, 0, 0x30, 0x39]), Ok(Request::Unsupported(12345)));
        assert_eq!(Request::parse(&[2, 0, 0, 17]), Ok(Request::Unsupported(17)));
        assert_eq!(Request::parse(&[2, 0, 0, 17, b'a', 0, 7]), Ok(Request::Unsupported(17)));
        assert_eq!(ProtocolError::BadName.code(), code::KRB5_CC_BADNAME);
        assert_eq!(ProtocolError::Version(1, 0).code(), code::KRB5_FCC_INTERNAL);
        // REPLACE announcing more credentials than its bytes can hold.
        let replace = RequestBuilder::new(Opcode::Replace, Some("x"))
            .u32(0)
            .bytes(&princ("a@R").to_bytes())
            .u32(200)
            .body();
        assert!(Request::parse(&replace).is_err());
    }

    #[test]
    fn matching_follows_mit() {
        let cred = service_cred("alice@R", "HTTP/web@R", 100);
        let mut tag = MatchCred {
            client: Some(princ("alice@R")),
            server: Some(Principal::parse("HTTP/web@R", 2).unwrap()),
            ..MatchCred::default()
        };
        assert!(tag.matches(0, &cred));
        // Times: the credential must last until the wanted end.
        tag.times.endtime = 100;
        assert!(tag.matches(flags::TC_MATCH_TIMES, &cred));
        tag.times.endtime = 101;
        assert!(!tag.matches(flags::TC_MATCH_TIMES, &cred));
        assert!(tag.matches(0, &cred));
        tag.times.endtime = 0;
        // Another realm matches only by name.
        let other_realm = MatchCred {
            server: Some(Principal::new(2, "", &["HTTP", "web"])),
            ..tag.clone()
        };
        assert!(!other_realm.matches(0, &cred));
        assert!(other_realm.matches(flags::TC_MATCH_SRV_NAMEONLY, &cred));
        // Enctype.
        let aes128 = MatchCred {
            enctype: Some(17),
            ..tag.clone()
        };
        assert!(!aes128.matches(flags::TC_MATCH_KEYTYPE, &cred));
        assert!(aes128.matches(0, &cred));
        // A user-to-user credential is never a plain match.
        let mut u2u = cred.clone();
        u2u.is_skey = true;
        assert!(!tag.matches(0, &u2u));
        // Flags.
        let forwardable = MatchCred {
            flags: 0x4000_0000,
            ..tag.clone()
        };
        assert!(!forwardable.matches(flags::TC_MATCH_FLAGS, &cred));
        // Another client.
        let bob = MatchCred {
            client: Some(princ("bob@R")),
            ..tag
        };
        assert!(!bob.matches(0, &cred));
    }

    /// A small deterministic generator for the fuzz-style tests (no dependency needed).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn valid_bodies() -> Vec<Vec<u8>> {
        let cred = service_cred("alice@R", "HTTP/web@R", 99).to_bytes().unwrap();
        let mut mcred = Vec::new();
        MatchCred {
            client: Some(princ("alice@R")),
            server: Some(princ("HTTP/web@R")),
            enctype: Some(18),
            addresses: Some(vec![]),
            ticket: Some(vec![1, 2]),
            ..MatchCred::default()
        }
        .encode(&mut mcred);
        vec![
            RequestBuilder::new(Opcode::Store, Some("1000")).bytes(&cred).body(),
            RequestBuilder::new(Opcode::Retrieve, Some("1000"))
                .u32(1)
                .bytes(&mcred)
                .body(),
            RequestBuilder::new(Opcode::RemoveCred, Some("1000"))
                .u32(0)
                .bytes(&mcred)
                .body(),
            RequestBuilder::new(Opcode::Initialize, Some("1000"))
                .bytes(&princ("alice@R").to_bytes())
                .body(),
            RequestBuilder::new(Opcode::Replace, Some("1000"))
                .u32(0)
                .bytes(&princ("alice@R").to_bytes())
                .u32(1)
                .u32(cred.len() as u32)
                .bytes(&cred)
                .body(),
            RequestBuilder::new(Opcode::GetCredByUuid, Some("1000"))
                .bytes(&[1; 16])
                .body(),
        ]
    }

    #[test]
    fn fuzz_truncated_and_mutated_requests_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for body in valid_bodies() {
            assert!(Request::parse(&body).is_ok());
            // Every truncation is an error (names end in a zero, then fields are required).
            for n in 0..body.len() {
                assert!(Request::parse(&body[..n]).is_err(), "{n} of {body:?}");
            }
            // Mutations: flip bytes, including lengths and counts; the result is whatever it
            // is, but never a panic.
            for _ in 0..2000 {
                let mut m = body.clone();
                for _ in 0..(1 + rng.next() % 4) {
                    let i = (rng.next() as usize) % m.len();
                    m[i] = rng.next() as u8;
                }
                let _ = Request::parse(&m);
            }
        }
        // Pure noise, of every length up to a few hundred bytes, after a valid header or not.
        for len in 0..400 {
            let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = Request::parse(&noise);
            if noise.len() >= 4 {
                noise[0] = 2;
                noise[2] = 0;
                noise[3] = (rng.next() % 25) as u8;
                let _ = Request::parse(&noise);
            }
        }
        // Lengths that claim everything.
        let _ = Request::parse(&[2, 0, 0, 6, b'a', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let _ = Reply::parse_frame(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    }
}
