//! `credguard-image`: builds, signs and checks enclave images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credguard_image::{Measurement, SignedImage, SigningKey, default_manifest_path, dev, upgrade_from_arg};

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
        Cmd::Build { key, upgrade_from } => {
            let upgrade_from = upgrade_from
                .iter()
                .map(|a| upgrade_from_arg(a))
                .collect::<Result<Vec<Measurement>, _>>()?;
            let built = dev::ensure_enclave_built()?;
            if key.is_some() || !upgrade_from.is_empty() {
                let key = match key {
                    Some(key) => SigningKey::load(&key)?,
                    None => dev::ensure_dev_key()?,
                };
                key.sign_file_with(&built.image, &built.manifest, &upgrade_from)?;
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
        } => {
            let upgrade_from = upgrade_from
                .iter()
                .map(|a| upgrade_from_arg(a))
                .collect::<Result<Vec<Measurement>, _>>()?;
            let key = SigningKey::load(&key)?;
            let manifest = manifest.unwrap_or_else(|| default_manifest_path(&image));
            let m = key.sign_file_with(&image, &manifest, &upgrade_from)?;
            println!("measurement: {}", m.measurement);
            println!("signer:      {}", m.signer);
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
            for u in img.upgrade_from() {
                println!("upgrade from: {u} (may open and re-seal its vault)");
            }
        }
    }
    Ok(())
}
