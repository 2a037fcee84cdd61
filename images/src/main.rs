//! `credguard-image`: builds, signs and checks enclave images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credguard_image::{Measurement, Policy, SignedImage, SigningKey, default_manifest_path, dev, upgrade_from_arg};

#[derive(Parser)]
#[command(
    name = "credguard-image",
    version,
    about = "Build, sign and check credguard enclave images"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the enclave and sign it: with --key, that key; without, the dev key (made on first use).
    Build {
        /// PKCS#8 Ed25519 private key (e.g. made by `keygen`). Default: the dev key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Allow this image to open (and re-seal) the vault of an earlier image: its measurement
        /// (96 hex digits) or its manifest's path. Repeatable, at most 4.
        #[arg(long, value_name = "MEASUREMENT|MANIFEST")]
        upgrade_from: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Sign an existing image, writing `<image>.manifest.json` (or --manifest).
    Sign {
        /// The image.
        image: PathBuf,
        /// PKCS#8 Ed25519 private key.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the manifest.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Allow this image to open (and re-seal) the vault of an earlier image: its measurement
        /// (96 hex digits) or its manifest's path. Repeatable, at most 4.
        #[arg(long, value_name = "MEASUREMENT|MANIFEST")]
        upgrade_from: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Make a signing key pair: PRIVATE (PKCS#8, mode 0600) and PRIVATE.pub (hex public key).
    Keygen {
        /// Path of the private key to create.
        private: PathBuf,
    },
    /// Verify an image against its manifest and a trusted public key.
    Verify {
        /// The image.
        image: PathBuf,
        /// Its manifest (default `<image>.manifest.json`).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The trusted public key (default: the dev key).
        #[arg(long)]
        trusted_key: Option<PathBuf>,
    },
}

/// The image's signed policy (see `credguard_image::Policy`): rules no request can change.
#[derive(clap::Args)]
struct PolicyArgs {
    /// Let logons that ask for it use rc4-hmac (weak: only for domains that still need it). Without
    /// it the enclave refuses rc4-hmac whatever the proxy's configuration says.
    #[arg(long)]
    allow_rc4: bool,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            allow_rc4: self.allow_rc4,
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credguard-image: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), credguard_image::ImageError> {
    match cli.command {
        Cmd::Build {
            key,
            upgrade_from,
            policy,
        } => {
            let policy = policy.policy();
            let upgrade_from = upgrade_from
                .iter()
                .map(|a| upgrade_from_arg(a))
                .collect::<Result<Vec<Measurement>, _>>()?;
            let built = dev::ensure_enclave_built()?;
            if key.is_some() || !upgrade_from.is_empty() || !policy.is_default() {
                let key = match key {
                    Some(key) => SigningKey::load(&key)?,
                    None => dev::ensure_dev_key()?,
                };
                key.sign_file_full(&built.image, &built.manifest, &upgrade_from, &policy)?;
                println!("signed {} with key {}", built.image.display(), key.fingerprint());
            } else {
                let img = built.verify()?;
                println!("image:       {}", built.image.display());
                println!("manifest:    {}", built.manifest.display());
                println!("measurement: {}", img.measurement());
                println!(
                    "signer:      {} (dev key {})",
                    img.signer_fingerprint(),
                    built.trusted_key.display()
                );
            }
        }
        Cmd::Sign {
            image,
            key,
            manifest,
            upgrade_from,
            policy,
        } => {
            let policy = policy.policy();
            let upgrade_from = upgrade_from
                .iter()
                .map(|a| upgrade_from_arg(a))
                .collect::<Result<Vec<Measurement>, _>>()?;
            let key = SigningKey::load(&key)?;
            let manifest = manifest.unwrap_or_else(|| default_manifest_path(&image));
            let m = key.sign_file_full(&image, &manifest, &upgrade_from, &policy)?;
            println!("measurement: {}", m.measurement);
            println!("signer:      {}", m.signer);
            println!(
                "rc4-hmac:    {}",
                if m.policy.allow_rc4 { "allowed" } else { "refused" }
            );
            for u in &m.upgrade_from {
                println!("upgrade from: {u}");
            }
            println!("manifest:    {}", manifest.display());
        }
        Cmd::Keygen { private } => {
            let mut public = private.clone().into_os_string();
            public.push(".pub");
            let key = SigningKey::generate(&private, &PathBuf::from(public))?;
            println!(
                "private key: {} (keep it off the machines that run credguard)",
                private.display()
            );
            println!("fingerprint: {}", key.fingerprint());
        }
        Cmd::Verify {
            image,
            manifest,
            trusted_key,
        } => {
            let manifest = manifest.unwrap_or_else(|| default_manifest_path(&image));
            let trusted = trusted_key.unwrap_or_else(dev::default_trusted_key_path);
            let img = SignedImage::load_and_verify(&image, &manifest, &trusted)?;
            println!("measurement: {}", img.measurement());
            println!("signer:      {}", img.signer_fingerprint());
            println!(
                "rc4-hmac:    {}",
                if img.policy().allow_rc4 { "allowed" } else { "refused" }
            );
            for u in img.upgrade_from() {
                println!("upgrade from: {u} (may open and re-seal its vault)");
            }
        }
    }
    Ok(())
}
