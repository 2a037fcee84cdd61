//! A throwaway MIT KDC for the end-to-end tests (scripts/test-kdc.sh), stopped when dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use super::temp_dir;

/// A running test KDC; stopped when dropped.
pub struct TestKdc {
    /// Its directory (database, krb5.conf, keytabs).
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

impl TestKdc {
    /// Starts one, or returns None (after a loud skip) when the MIT tools are missing.
    pub fn start(test: &str) -> Option<TestKdc> {
        Self::start_with_clock(test, None)
    }

    /// Like [`TestKdc::start`], with the KDC's clock off by `offset` (libfaketime syntax, e.g.
    /// `"+1h"`), to test clock-skew handling against the real KDC.
    pub fn start_with_clock(test: &str, offset: Option<&str>) -> Option<TestKdc> {
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = temp_dir(&format!("kdc-{test}"));
        let mut cmd = Command::new(format!("{root}/scripts/test-kdc.sh"));
        cmd.arg("start").arg(&dir);
        if let Some(offset) = offset {
            cmd.env("KDC_FAKETIME", offset);
        }
        let env = script_env(test, "test-kdc.sh", &mut cmd)?;
        Some(TestKdc { dir, env })
    }

    /// A value the script printed: KDC, REALM, PASSWORD, KRB5_CONFIG, KRB5_KDC_PROFILE, KEYTAB,
    /// SPN, HTTP_KEYTAB, HTTP_SPN, PID.
    pub fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing"))
    }

    /// The long-term keys the KDC holds for `principal`, as (enctype, key), read with
    /// `kadmin.local ktadd -norandkey` and `klist -kKe` (MIT's own tools).
    pub fn long_term_keys(&self, principal: &str) -> Vec<(i32, Vec<u8>)> {
        // A service's name holds a '/', which is no part of a file name.
        let keytab = self.dir.join(format!("{}.export.keytab", principal.replace('/', "_")));
        let _ = std::fs::remove_file(&keytab);
        let out = Command::new("kadmin.local")
            .args(["-r", self.get("REALM"), "-q"])
            .arg(format!("ktadd -norandkey -k {} {principal}", keytab.display()))
            .env("KRB5_CONFIG", self.get("KRB5_CONFIG"))
            .env("KRB5_KDC_PROFILE", self.get("KRB5_KDC_PROFILE"))
            .output()
            .expect("running kadmin.local");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        keytab_keys(&keytab, self.get("KRB5_CONFIG"))
    }
}

impl Drop for TestKdc {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/test-kdc.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a KDC script (`name`, for messages) and reads the `KEY=value` lines it prints; `None`
/// (after [`tools_missing`]) when the MIT KDC tools are not installed (exit code 3).
fn script_env(test: &str, name: &str, cmd: &mut Command) -> Option<HashMap<String, String>> {
    let out = cmd.output().unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
    if out.status.code() == Some(3) {
        tools_missing(test, &String::from_utf8_lossy(&out.stderr));
        return None;
    }
    assert!(
        out.status.success(),
        "{name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A loud skip, or a failure when CREDGUARD_REQUIRE_TOOLS=1.
pub fn tools_missing(test: &str, what: &str) {
    assert!(
        std::env::var("CREDGUARD_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{test}: {what} and CREDGUARD_REQUIRE_TOOLS=1"
    );
    eprintln!("!!! SKIPPED {test}: {what}");
}

/// The keys in `keytab` as (enctype, key), read with MIT's `klist -kKe`.
pub fn keytab_keys(keytab: &std::path::Path, krb5_config: &str) -> Vec<(i32, Vec<u8>)> {
    let out = Command::new("klist")
        .args(["-k", "-K", "-e"])
        .arg(keytab)
        .env("KRB5_CONFIG", krb5_config)
        .output()
        .expect("running klist");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Lines like `   1 alice@REALM (aes256-cts-hmac-sha1-96)  (0x5eed...)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.rsplit_once("(0x")?;
            let key = rest.strip_suffix(')')?;
            let name = l.split('(').nth(1)?.split(')').next()?;
            let enctype = match name {
                "aes256-cts-hmac-sha1-96" => 18,
                "aes128-cts-hmac-sha1-96" => 17,
                "aes256-cts-hmac-sha384-192" => 20,
                "aes128-cts-hmac-sha256-128" => 19,
                "arcfour-hmac" | "DEPRECATED:arcfour-hmac" => 23,
                _ => return None,
            };
            let key = (0..key.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((enctype, key))
        })
        .collect()
}

/// Two running MIT KDCs with a cross-realm trust (scripts/test-kdc-cross.sh): A.XREALM.TEST holds
/// alice, B.XREALM.TEST the services, both `krbtgt/B.XREALM.TEST@A.XREALM.TEST`; A's KDC refers
/// host-based names of `.b.xrealm.test` to B. Stopped when dropped.
pub struct CrossRealmKdcs {
    /// Their directory (databases, krb5.conf, kdc-a.conf, kdc-b.conf, logs, keytabs).
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

impl CrossRealmKdcs {
    /// Starts both, or returns None (after a loud skip) when the MIT tools are missing.
    pub fn start(test: &str) -> Option<CrossRealmKdcs> {
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = temp_dir(&format!("kdcs-{test}"));
        let mut cmd = Command::new(format!("{root}/scripts/test-kdc-cross.sh"));
        cmd.arg("start").arg(&dir);
        let env = script_env(test, "test-kdc-cross.sh", &mut cmd)?;
        Some(CrossRealmKdcs { dir, env })
    }

    /// A value the script printed: KDC_A, KDC_B, REALM_A, REALM_B, PASSWORD, KRB5_CONFIG,
    /// KRB5_KDC_PROFILE_A, KRB5_KDC_PROFILE_B, TRUST, SPN, KEYTAB, HTTP_SPN, HTTP_KEYTAB.
    pub fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing"))
    }

    /// The long-term keys realm `which` (`"A"` or `"B"`) holds for `principal` (see
    /// [`TestKdc::long_term_keys`]).
    pub fn long_term_keys(&self, which: &str, principal: &str) -> Vec<(i32, Vec<u8>)> {
        let keytab = self
            .dir
            .join(format!("{which}-{}.export.keytab", principal.replace(['/', '@'], "_")));
        let _ = std::fs::remove_file(&keytab);
        let out = Command::new("kadmin.local")
            .args(["-r", self.get(&format!("REALM_{which}")), "-q"])
            .arg(format!("ktadd -norandkey -k {} {principal}", keytab.display()))
            .env("KRB5_CONFIG", self.get("KRB5_CONFIG"))
            .env("KRB5_KDC_PROFILE", self.get(&format!("KRB5_KDC_PROFILE_{which}")))
            .output()
            .expect("running kadmin.local");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        keytab_keys(&keytab, self.get("KRB5_CONFIG"))
    }

    /// Lines of KDC `which`'s log (`"a"` or `"b"`) that record a TGS request.
    pub fn tgs_log(&self, which: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("kdc-{which}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("TGS_REQ"))
            .map(String::from)
            .collect()
    }
}

impl Drop for CrossRealmKdcs {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/test-kdc-cross.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
