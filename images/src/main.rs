//! `credguard-image`: builds, signs and checks enclave images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credguard_image::{SignedImage, SigningKey, default_manifest_path, dev};

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
        Cmd::Build { key } => {
            let built = dev::ensure_enclave_built()?;
            if let Some(key) = key {
                let key = SigningKey::load(&key)?;
                key.sign_file(&built.image, &built.manifest)?;
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
        Cmd::Sign { image, key, manifest } => {
            let key = SigningKey::load(&key)?;
            let manifest = manifest.unwrap_or_else(|| default_manifest_path(&image));
            let m = key.sign_file(&image, &manifest)?;
            println!("measurement: {}", m.measurement);
            println!("signer:      {}", m.signer);
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
        }
    }
    Ok(())
}
