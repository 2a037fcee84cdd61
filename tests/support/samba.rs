//! A throwaway Samba AD domain controller for the end-to-end tests (scripts/test-samba-dc.sh),
//! stopped when dropped. A DC serves fixed ports (88, 464, 389, 445, 53), so one runs at a time
//! on the host: each holds an exclusive lock on a file in the temp directory while it runs, and
//! the next test waits for it.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use super::kdc::tools_missing;
use super::temp_dir;

/// A running test DC; stopped (and its lock released) when dropped.
pub struct SambaDc {
    /// Its directory (the provisioned domain, smb.conf, logs).
    pub dir: PathBuf,
    env: HashMap<String, String>,
    // Held for the DC's life: other tests' DCs wait for it.
    _lock: File,
}

impl SambaDc {
    /// Provisions and starts one (waiting for any other test's DC to stop first), or returns
    /// None after a loud skip when Samba is not installed.
    pub fn start(test: &str) -> Option<SambaDc> {
        let root = env!("CARGO_MANIFEST_DIR");
        let lock =
            File::create(std::env::temp_dir().join("credguard-samba-dc.lock")).expect("creating the DC lock file");
        lock.lock().expect("locking the DC lock file");
        let dir = temp_dir(&format!("samba-{test}"));
        let out = Command::new(format!("{root}/scripts/test-samba-dc.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("running scripts/test-samba-dc.sh");
        if out.status.code() == Some(3) {
            tools_missing(test, &String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let dc = SambaDc {
            dir,
            env: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _lock: lock,
        };
        assert!(
            out.status.success(),
            "test-samba-dc.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(dc)
    }

    /// A value the script printed: REALM, DOMAIN, DC, KDC, KPASSWD, DNS, PASSWORD,
    /// ADMIN_PASSWORD, SMB_CONF, KRB5_CONFIG, PID.
    pub fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing"))
    }

    /// Runs `samba-tool ARGS -s smb.conf` against the DC's database; panics if it fails.
    pub fn samba_tool(&self, args: &[&str]) -> String {
        let out = Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(self.get("SMB_CONF"))
            .output()
            .expect("running samba-tool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "samba-tool {args:?}: {text}");
        text
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/test-samba-dc.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
