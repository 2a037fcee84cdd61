//! Scanning a process's memory for secrets: every readable mapping through `/proc/PID/mem`, as an
//! attacker with the uid (or root) could. Used on the proxy and the VMM (tests/isolation.rs) and on
//! the programs that use credguard through KCM (tests/kcm_programs.rs).

use std::os::unix::fs::FileExt;

/// One readable mapping of a process.
pub struct Mapping {
    /// Its first address.
    pub start: u64,
    /// The address after its last byte.
    pub end: u64,
    /// Its line of `/proc/PID/maps`.
    pub line: String,
}

/// The readable mappings of `pid` (`[vvar]` and `[vsyscall]` left out: not readable through
/// `/proc/PID/mem`).
pub fn readable_mappings(pid: u32) -> Vec<Mapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("reading maps");
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                line: line.to_owned(),
            })
        })
        .collect()
}

/// Every occurrence of each needle in the readable memory of `pid`: (needle name, mapping, address).
/// Also returns how many bytes were read.
pub fn scan(pid: u32, needles: &[(&str, Vec<u8>)]) -> (Vec<String>, u64) {
    scan_except(pid, needles, &[])
}

/// [`scan`], leaving out the mappings that start at one of `skipped`.
pub fn scan_except(pid: u32, needles: &[(&str, Vec<u8>)], skipped: &[u64]) -> (Vec<String>, u64) {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("opening /proc/PID/mem");
    let mut hits = Vec::new();
    let mut read = 0u64;
    let longest = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    for m in readable_mappings(pid)
        .into_iter()
        .filter(|m| !skipped.contains(&m.start))
    {
        // In chunks, overlapping by the longest needle so none is cut in two.
        const CHUNK: u64 = 1 << 20;
        let mut at = m.start;
        while at < m.end {
            let len = (m.end - at).min(CHUNK + longest as u64);
            let mut buf = vec![0u8; len as usize];
            let Ok(n) = mem.read_at(&mut buf, at) else {
                at += CHUNK;
                continue;
            };
            read += n as u64;
            for (name, needle) in needles {
                for (i, w) in buf[..n].windows(needle.len()).enumerate() {
                    if w == needle.as_slice() && (i as u64) < CHUNK {
                        hits.push(format!("{name} at {:#x} in {}", at + i as u64, m.line));
                    }
                }
            }
            at += CHUNK;
        }
    }
    (hits, read)
}

/// `s` as UTF-16LE, as Windows-minded code keeps a password.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Asserts that the scanner finds each needle in this test process, which holds them all: a
/// scan that finds nothing elsewhere then means something.
pub fn assert_scanner_sees(needles: &[(&str, Vec<u8>)]) {
    let (own, _) = scan(std::process::id(), needles);
    for (name, _) in needles {
        assert!(
            own.iter().any(|h| h.starts_with(&format!("{name} at "))),
            "the scanner is blind to the {name}"
        );
    }
}

/// Scans `who` (process `pid`, more than 1 MiB of it read) and asserts that no needle is there
/// but those named `allowed` (a key the process may hold, which shows the scan can find keys in
/// it); returns every hit.
pub fn assert_no_secrets(who: &str, pid: u32, needles: &[(&str, Vec<u8>)], allowed: &str) -> Vec<String> {
    let (hits, read) = scan(pid, needles);
    assert!(read > 1 << 20, "read only {read} bytes of the {who}");
    let secret_hits: Vec<&String> = hits
        .iter()
        .filter(|h| !h.starts_with(&format!("{allowed} at ")))
        .collect();
    assert!(
        secret_hits.is_empty(),
        "secrets in the {who}'s memory:\n{}",
        secret_hits.iter().map(|h| h.as_str()).collect::<Vec<_>>().join("\n")
    );
    hits
}
