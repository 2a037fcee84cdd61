//! pyspnego, the independent NTLM acceptor of the end-to-end tests (tests/python/ntlm_acceptor.py).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Hex, as the acceptor's lines carry messages.
pub mod hex {
    pub fn encode(b: impl AsRef<[u8]>) -> String {
        b.as_ref().iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn decode(s: impl AsRef<str>) -> Result<Vec<u8>, String> {
        let s = s.as_ref();
        if s.len() % 2 != 0 {
            return Err(format!("odd length: {s:?}"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16).map_err(|_| format!("not hex: {s:?}")))
            .collect()
    }
}

/// Whether pyspnego (and pycryptodomex, for MD4) are installed; a loud skip otherwise, or a
/// failure with CREDGUARD_REQUIRE_TOOLS=1.
pub fn pyspnego_or_skip(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import spnego, Cryptodome"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    assert!(
        std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "python3 pyspnego/pycryptodomex are missing and CREDGUARD_REQUIRE_TOOLS=1"
    );
    eprintln!("!!! SKIPPED {test}: python3 -m pip install pyspnego pycryptodomex");
    false
}

/// The independent acceptor, with the accounts in `user_file` and optional channel bindings
/// application data.
pub struct Acceptor {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Acceptor {
    pub fn start(user_file: &std::path::Path, cbt_app_data: &[u8]) -> Acceptor {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ntlm_acceptor.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(hex::encode(cbt_app_data))
            .env("NTLM_USER_FILE", user_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the acceptor");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Acceptor { child, stdin, stdout }
    }

    pub fn exchange(&mut self, message: &[u8]) -> String {
        writeln!(self.stdin, "{}", hex::encode(message)).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CHALLENGE with `flags` and `target_info` (crafted: for the refusals and malformed cases).
pub fn crafted_challenge(flags: u32, target_info: &[u8]) -> Vec<u8> {
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 48, 0, 0, 0]);
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    m.extend_from_slice(&[0; 8]);
    let len = target_info.len() as u16;
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&48u32.to_le_bytes());
    m.extend_from_slice(target_info);
    m
}

/// MsvAvNbDomainName "D", then MsvAvEOL.
pub const TARGET_INFO: &[u8] = &[2, 0, 2, 0, b'D', 0, 0, 0, 0, 0];
