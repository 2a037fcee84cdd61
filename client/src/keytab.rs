//! Reading a key from an MIT keytab file (format version 0x0502, what MIT, Heimdal, Samba and
//! `ktpass` write), for `credguardctl machine-account`.
//!
//! Hand-written: the format is a few length-prefixed fields, and the crates that read it pull in
//! more than this one lookup needs. Version 0x0501 (native byte order, from the 1990s) is
//! refused with a clear message. The file is hostile input like any other: every length is
//! checked against what is left, and a malformed file is an error, never a panic.

use zeroize::Zeroizing;

/// The key of a principal found in a keytab.
pub struct KeytabKey {
    /// Its enctype.
    pub enctype: i32,
    /// Its key version number.
    pub kvno: u32,
    /// The key bytes.
    pub value: Zeroizing<Vec<u8>>,
}

/// Why a keytab gave no key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeytabError {
    /// Not a keytab of a version read here.
    #[error("not an MIT keytab (version 0x0502): {0}")]
    Format(String),
    /// Malformed inside.
    #[error("malformed keytab: {0}")]
    Malformed(&'static str),
    /// No usable key of the principal.
    #[error("the keytab has no key of {principal} in an enctype credguard uses (17, 18, 19, 20)")]
    NoKey {
        /// The principal asked for.
        principal: String,
    },
}

/// A cursor over the file's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeytabError> {
        if self.0.len() < n {
            return Err(KeytabError::Malformed("a field runs past the end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, KeytabError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, KeytabError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, KeytabError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn data(&mut self) -> Result<&'a [u8], KeytabError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn text(&mut self) -> Result<String, KeytabError> {
        String::from_utf8(self.data()?.to_vec()).map_err(|_| KeytabError::Malformed("a name is not UTF-8"))
    }
}

/// One entry: principal (`a/b@REALM`), kvno, enctype, key.
struct Entry {
    principal: String,
    kvno: u32,
    enctype: i32,
    key: Zeroizing<Vec<u8>>,
}

fn entry(mut r: Reader<'_>) -> Result<Entry, KeytabError> {
    let count = r.u16()?;
    let realm = r.text()?;
    let mut parts = Vec::new();
    for _ in 0..count {
        parts.push(r.text()?);
    }
    let _name_type = r.u32()?;
    let _timestamp = r.u32()?;
    let vno8 = u32::from(r.u8()?);
    let enctype = i32::from(r.u16()?);
    let key = Zeroizing::new(r.data()?.to_vec());
    // A 32-bit kvno follows in newer files; 0 there means "use the 8-bit one".
    let kvno = match r.0.len() {
        n if n >= 4 => Some(r.u32()?).filter(|&v| v != 0).unwrap_or(vno8),
        _ => vno8,
    };
    Ok(Entry {
        principal: format!("{}@{realm}", parts.join("/")),
        kvno,
        enctype,
        key,
    })
}

fn entries(bytes: &[u8]) -> Result<Vec<Entry>, KeytabError> {
    let mut r = Reader(bytes);
    match r.u16() {
        Ok(0x0502) => {}
        Ok(0x0501) => {
            return Err(KeytabError::Format(
                "version 0x0501 (native byte order) is not read".into(),
            ));
        }
        _ => return Err(KeytabError::Format("it does not start with 0x05 0x02".into())),
    }
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let size = r.u32()? as i32;
        // A negative size is a hole left by a deleted entry.
        let body = r.take(size.unsigned_abs() as usize)?;
        if size > 0 {
            out.push(entry(Reader(body))?);
        }
    }
    Ok(out)
}

/// The key of `principal` (`host/fqdn@REALM`, realm compared without ASCII case) to use: of its
/// highest kvno, the strongest enctype credguard uses (never DES or rc4-hmac).
pub fn find_key(bytes: &[u8], principal: &str) -> Result<KeytabKey, KeytabError> {
    let same = |p: &str| match (p.rsplit_once('@'), principal.rsplit_once('@')) {
        (Some((n1, r1)), Some((n2, r2))) => n1 == n2 && r1.eq_ignore_ascii_case(r2),
        _ => false,
    };
    let mine: Vec<Entry> = entries(bytes)?.into_iter().filter(|e| same(&e.principal)).collect();
    let rank = |e: &Entry| credguard_proto::enctype::preferred(false).position(|p| p == e.enctype);
    let best = mine
        .iter()
        .filter(|e| rank(e).is_some())
        .max_by_key(|e| (e.kvno, std::cmp::Reverse(rank(e))))
        .ok_or_else(|| KeytabError::NoKey {
            principal: principal.to_string(),
        })?;
    Ok(KeytabKey {
        enctype: best.enctype,
        kvno: best.kvno,
        value: best.key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// An entry as MIT's ktutil writes it.
    fn entry_bytes(parts: &[&str], realm: &str, kvno: u32, enctype: u16, key: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&(parts.len() as u16).to_be_bytes());
        counted(&mut e, realm.as_bytes());
        for p in parts {
            counted(&mut e, p.as_bytes());
        }
        e.extend_from_slice(&1u32.to_be_bytes());
        e.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        e.push(kvno as u8);
        e.extend_from_slice(&enctype.to_be_bytes());
        counted(&mut e, key);
        e.extend_from_slice(&kvno.to_be_bytes());
        let mut out = (e.len() as u32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    fn keytab(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![5, 2];
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn the_strongest_key_of_the_newest_kvno_is_chosen() {
        let kt = keytab(&[
            entry_bytes(&["host", "h.test"], "TEST", 2, 18, &[1; 32]),
            entry_bytes(&["host", "h.test"], "TEST", 3, 23, &[2; 16]),
            entry_bytes(&["host", "h.test"], "TEST", 3, 17, &[3; 16]),
            entry_bytes(&["host", "h.test"], "TEST", 3, 18, &[4; 32]),
            entry_bytes(&["other"], "TEST", 9, 18, &[5; 32]),
        ]);
        let k = find_key(&kt, "host/h.test@test").unwrap();
        assert_eq!((k.enctype, k.kvno, k.value[0]), (18, 3, 4));
        let k = find_key(&kt, "other@TEST").unwrap();
        assert_eq!(k.value[0], 5);
    }

    #[test]
    fn holes_are_skipped_and_missing_keys_said() {
        let mut kt = keytab(&[entry_bytes(&["host", "h.test"], "TEST", 1, 17, &[1; 16])]);
        // A hole of 6 bytes.
        kt.extend_from_slice(&(-6i32).to_be_bytes());
        kt.extend_from_slice(&[0; 6]);
        assert_eq!(find_key(&kt, "host/h.test@TEST").unwrap().enctype, 17);
        assert!(matches!(find_key(&kt, "host/x@TEST"), Err(KeytabError::NoKey { .. })));
        // Only rc4-hmac or DES: no key credguard uses.
        let kt = keytab(&[
            entry_bytes(&["u"], "TEST", 1, 23, &[1; 16]),
            entry_bytes(&["u"], "TEST", 1, 3, &[1; 8]),
        ]);
        assert!(matches!(find_key(&kt, "u@TEST"), Err(KeytabError::NoKey { .. })));
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let good = keytab(&[entry_bytes(&["host", "h.test"], "TEST", 1, 18, &[1; 32])]);
        assert!(matches!(find_key(&[5, 1, 0, 0], "a@B"), Err(KeytabError::Format(_))));
        assert!(matches!(find_key(b"hello", "a@B"), Err(KeytabError::Format(_))));
        for cut in 0..good.len() {
            let _ = find_key(&good[..cut], "host/h.test@TEST");
        }
        let mut big = good.clone();
        big[2..6].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        assert!(find_key(&big, "host/h.test@TEST").is_err());
        let mut bad_len = good;
        bad_len[8] = 0xff;
        assert!(find_key(&bad_len, "host/h.test@TEST").is_err());
    }
}
