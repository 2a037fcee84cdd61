//! The VMM's part of credguard's configuration file: the `[vmm]` table of the same TOML file the
//! proxy reads (`/etc/credguard/credguard.toml`, `credguard-vmm run --config PATH`).
//!
//! ```toml
//! [vmm]
//! # Refuse to start where KVM offers no guest_memfd (see `--require-hidden-memory`).
//! require_hidden_memory = true
//! # The public key the enclave image must be signed with (see `--trusted-key`).
//! trusted_key = "/etc/credguard/signing.pub"
//! ```
//!
//! Every key is optional and a command-line flag wins over it. Unknown keys in `[vmm]` are
//! refused (a typo must not silently drop a protection); the other tables belong to the proxy and
//! are ignored here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or its `[vmm]` table is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The `[vmm]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmmConfig {
    /// Refuse to start unless guest RAM can be a `guest_memfd` of which the VMM maps only the
    /// boot tables, the image and the DMA window (`--require-hidden-memory`).
    pub require_hidden_memory: bool,
    /// The public key the image's manifest must be signed with (`--trusted-key`). A relative
    /// path is taken relative to the configuration file's directory.
    pub trusted_key: Option<PathBuf>,
}

/// The whole file as the VMM sees it: only `[vmm]`.
#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    vmm: VmmConfig,
}

impl VmmConfig {
    /// Reads the `[vmm]` table of the configuration file at `path` (defaults if it has none).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        if let Some(key) = &config.trusted_key
            && key.is_relative()
            && let Some(dir) = path.parent()
        {
            config.trusted_key = Some(dir.join(key));
        }
        Ok(config)
    }

    /// Parses configuration text; only its `[vmm]` table is read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(file.vmm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vmm_table_and_ignores_the_proxys() {
        let c = VmmConfig::parse(
            "[api]\nsocket = \"/x\"\n[vmm]\nrequire_hidden_memory = true\ntrusted_key = \"/etc/k.pub\"\n",
        )
        .unwrap();
        assert!(c.require_hidden_memory);
        assert_eq!(c.trusted_key.as_deref(), Some(Path::new("/etc/k.pub")));
        assert_eq!(
            VmmConfig::parse("[limits]\nsessions_per_uid = 3\n").unwrap(),
            VmmConfig::default()
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_in_vmm_are_refused() {
        let e = VmmConfig::parse("[vmm]\nrequire_hidden_memroy = true\n").unwrap_err();
        assert!(e.contains("require_hidden_memroy"), "{e}");
        assert!(VmmConfig::parse("[vmm]\nrequire_hidden_memory = \"yes\"\n").is_err());
        assert!(VmmConfig::parse("vmm = 3\n").is_err());
        assert!(VmmConfig::parse("[vmm\n").is_err());
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/credguard.toml")).unwrap();
        assert_eq!(VmmConfig::parse(&text).unwrap(), VmmConfig::default());
        // Its commented-out [vmm] block, uncommented, is what it documents.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if ["[vmm]", "require_hidden_memory", "trusted_key"]
                        .iter()
                        .any(|k| rest.starts_with(k)) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = VmmConfig::parse(&uncommented).unwrap();
        assert!(c.require_hidden_memory);
        assert_eq!(c.trusted_key.as_deref(), Some(Path::new("/etc/credguard/signing.pub")));
    }

    #[test]
    fn a_relative_key_is_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("credguard-vmm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credguard.toml");
        std::fs::write(&file, "[vmm]\ntrusted_key = \"signing.pub\"\n").unwrap();
        let c = VmmConfig::load(&file).unwrap();
        assert_eq!(c.trusted_key, Some(dir.join("signing.pub")));
        let e = VmmConfig::load(&dir.join("missing.toml")).unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
