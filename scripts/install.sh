#!/usr/bin/env bash
# Installs credguard as two systemd services (credguard-vmm, credguard-lsa-proxy).
#
#   scripts/install.sh --key /secure/signing.pk8 [--enable]   production: sign with your key
#   scripts/install.sh --dev-key [--enable]                    sign with the repository's dev key
#   DESTDIR=/tmp/stage scripts/install.sh --dev-key            stage only: no users, no systemctl
#
# What it does: builds the release binaries and the enclave, signs the image, installs binaries to
# /usr/local/bin, the image to /usr/local/lib/credguard, the trusted public key and the
# configuration to /etc/credguard (an existing configuration is kept), the units to
# /etc/systemd/system, and creates the system users credguard-vmm and credguard-proxy and the
# group credguard (which lets the proxy open the VMM's socket).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key="" dev=0 enable=0
while [ $# -gt 0 ]; do
  case "$1" in
    --key) key="${2:?--key needs a path}"; shift 2 ;;
    --dev-key) dev=1; shift ;;
    --enable) enable=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$key" ] && [ "$dev" = 0 ]; then
  echo "install.sh: give --key PATH (production signing key) or --dev-key" >&2
  exit 2
fi
dest="${DESTDIR:-}"

cd "$root"
cargo build --release -p credguard-vmm -p credguard-lsa-proxy -p credguard-image
if [ -n "$key" ]; then
  target/release/credguard-image build --key "$key"
  pub="$key.pub"
else
  target/release/credguard-image build
  pub="images/keys/dev-signing.pub"
fi
[ -f "$pub" ] || { echo "install.sh: no public key at $pub" >&2; exit 2; }

install -d "$dest/usr/local/bin" "$dest/usr/local/lib/credguard" "$dest/etc/credguard" \
  "$dest/etc/systemd/system" "$dest/usr/local/share/doc/credguard"
install -m 0755 target/release/credguard-vmm target/release/credguard-lsa-proxy target/release/credguardctl \
  target/release/credguard-image "$dest/usr/local/bin/"
install -m 0644 images/out/enclave.elf images/out/enclave.elf.manifest.json "$dest/usr/local/lib/credguard/"
install -m 0644 "$pub" "$dest/etc/credguard/signing.pub"
[ -e "$dest/etc/credguard/credguard.toml" ] || install -m 0644 scripts/credguard.toml "$dest/etc/credguard/credguard.toml"
install -m 0644 scripts/systemd/credguard-vmm.service scripts/systemd/credguard-lsa-proxy.service \
  "$dest/etc/systemd/system/"
install -m 0644 README.md "$dest/usr/local/share/doc/credguard/"

if [ -n "$dest" ]; then
  echo "staged under $dest (no users created, systemd untouched)"
  exit 0
fi
getent group credguard >/dev/null || groupadd --system credguard
getent group kvm >/dev/null || groupadd --system kvm
id credguard-vmm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \
  --gid credguard --groups kvm credguard-vmm
id credguard-proxy >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \
  --user-group --groups credguard credguard-proxy
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$enable" = 1 ]; then
    systemctl enable --now credguard-vmm.service credguard-lsa-proxy.service
  fi
  echo "installed; start with: systemctl enable --now credguard-vmm credguard-lsa-proxy"
else
  echo "installed; systemd is not running here, so nothing was started"
fi
