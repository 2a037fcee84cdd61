#!/usr/bin/env bash
# Installs credguard as systemd services (credguard-vmm, credguard-lsa-proxy, and the KCM
# credential-cache daemon credguard-kcm, socket-activated).
#
#   scripts/install.sh --key /secure/signing.pk8 [--enable]   production: sign with your key
#   scripts/install.sh --dev-key [--enable]                    sign with the repository's dev key
#   DESTDIR=/tmp/stage scripts/install.sh --dev-key            stage only: no users, no systemctl
#   scripts/install.sh --dev-key --prebuilt target/debug        binaries already built there (tests, CI)
#   ... --ntlm-auth-alternative                                also make credguard-ntlm-auth the
#                                                              system's /usr/bin/ntlm_auth
#
# What it does: builds the release binaries and the enclave, signs the image, installs binaries to
# /usr/local/bin, the image to /usr/local/lib/credguard, the trusted public key and the
# configuration to /etc/credguard (an existing configuration is kept), the units to
# /etc/systemd/system, and creates the system users credguard-vmm and credguard-proxy and the
# group credguard (which lets the proxy open the VMM's socket), and the vault's host sealing secret
# /var/lib/credguard/sealing.secret (32 random bytes, root-only; kept if it exists, since saved
# credentials cannot be opened without it). The proxy's unit allows IP traffic to loopback only:
# the drop-in credguard-lsa-proxy.service.d/ip-allow.conf (rewritten at each install) adds the KDCs
# named in the configuration and the nameservers of /etc/resolv.conf. The KCM daemon runs as the
# system user credguard-kcm, the one uid (besides root) the proxy lets act for other uids (the
# drop-in credguard-lsa-proxy.service.d/kcm.conf); its socket takes sssd-kcm's place, and programs
# use it once krb5.conf says `default_ccache_name = KCM:` (printed at the end). The NTLM helper
# credguard-ntlm-auth (Samba ntlm_auth's client side, for Firefox, libsoup, Evolution, curl
# --ntlm-wb) is installed to /usr/local/bin; with --ntlm-auth-alternative it is registered with
# update-alternatives as /usr/bin/ntlm_auth (priority 10; Samba's winbind package, if present,
# keeps its own binary there and is not replaced). Off by default; under DESTDIR only staged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key="" dev=0 enable=0 bin_dir="" ntlm_alternative=0
while [ $# -gt 0 ]; do
  case "$1" in
    --key) key="${2:?--key needs a path}"; shift 2 ;;
    --dev-key) dev=1; shift ;;
    --enable) enable=1; shift ;;
    --prebuilt) bin_dir="${2:?--prebuilt needs a directory}"; shift 2 ;;
    --ntlm-auth-alternative) ntlm_alternative=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$key" ] && [ "$dev" = 0 ]; then
  echo "install.sh: give --key PATH (production signing key) or --dev-key" >&2
  exit 2
fi
dest="${DESTDIR:-}"

cd "$root"
# --prebuilt: the binaries `cargo test` already built (rebuilding a subset of the workspace would
# resolve other features and relink them under the tests' feet).
if [ -z "$bin_dir" ]; then
  cargo build --release -p credguard-vmm -p credguard-lsa-proxy -p credguard-kcm -p credguard-client \
    -p credguard-image -p pam-credguard -p credguard-ntlm-auth
  bin_dir=target/release
fi
if [ -n "$key" ]; then
  "$bin_dir/credguard-image" build --key "$key"
  pub="$key.pub"
else
  "$bin_dir/credguard-image" build
  pub="images/keys/dev-signing.pub"
fi
[ -f "$pub" ] || { echo "install.sh: no public key at $pub" >&2; exit 2; }

install -d "$dest/usr/local/bin" "$dest/usr/local/lib/credguard" "$dest/etc/credguard" \
  "$dest/etc/systemd/system" "$dest/usr/local/share/doc/credguard"
install -m 0755 "$bin_dir/credguard-vmm" "$bin_dir/credguard-lsa-proxy" "$bin_dir/credguard-kcm" \
  "$bin_dir/credguardctl" "$bin_dir/credguard-image" "$bin_dir/credguard-ntlm-auth" "$dest/usr/local/bin/"
install -m 0644 images/out/enclave.elf images/out/enclave.elf.manifest.json "$dest/usr/local/lib/credguard/"
install -m 0644 "$pub" "$dest/etc/credguard/signing.pub"
[ -e "$dest/etc/credguard/credguard.toml" ] || install -m 0644 scripts/credguard.toml "$dest/etc/credguard/credguard.toml"
install -m 0644 scripts/systemd/credguard-vmm.service scripts/systemd/credguard-lsa-proxy.service \
  scripts/systemd/credguard-kcm.service scripts/systemd/credguard-kcm.socket "$dest/etc/systemd/system/"
install -m 0644 README.md "$dest/usr/local/share/doc/credguard/"
# The PAM module goes where libpam looks for modules; no pam.d file is changed (see the README's
# PAM section for the lines to add).
pam_dir="/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/security"
install -d "$dest$pam_dir"
install -m 0644 "$bin_dir/libpam_credguard.so" "$dest$pam_dir/pam_credguard.so"

# IPAddressAllow= for the proxy: every address of the KDCs the configuration names (the quoted
# "host:port" values of its keys with "kdc" in the name, the realm table's included), the DNS
# servers it resolves them with, and its kerberos.dns_servers. Any other KDC (those found in DNS
# SRV records or krb5.conf included) must be added to the drop-in by hand.
ip_allow_dropin() {
  local conf="$1" addrs found hp host
  addrs="$(awk '$1 == "nameserver" { print $2 }' /etc/resolv.conf 2>/dev/null || true)"
  # dns_servers: "ip", "ip:port", "[v6]:port".
  for hp in $(grep -E '^[[:space:]]*dns_servers[[:space:]]*=' "$conf" 2>/dev/null | grep -oE '"[^"]+"' | tr -d '"'); do
    case "$hp" in
      \[*) host="${hp%%]*}"; host="${host#[}" ;;
      *:*:*) host="$hp" ;;
      *) host="${hp%:*}" ;;
    esac
    addrs="$addrs $host"
  done
  for hp in $(grep -E '^[[:space:]]*[A-Za-z_]*kdc[A-Za-z_]*[[:space:]]*=' "$conf" 2>/dev/null | grep -oE '"[^"]+"' | tr -d '"'); do
    host="${hp%:*}"; host="${host#[}"; host="${host%]}"
    found="$(getent ahosts "$host" | awk '{ print $1 }' || true)"
    [ -n "$found" ] || echo "install.sh: KDC $host does not resolve: the proxy's IP filter does not allow it" >&2
    addrs="$addrs $found"
  done
  echo "# Written by scripts/install.sh: the IP addresses the LSA proxy may reach besides loopback"
  echo "# (its unit says IPAddressDeny=any): KDCs named in /etc/credguard/credguard.toml and DNS servers."
  echo "# Add any other KDC (those found in DNS SRV records or krb5.conf: e.g. the DCs' subnet), then:"
  echo "# systemctl daemon-reload && systemctl restart credguard-lsa-proxy"
  echo "[Service]"
  addrs="$(echo $addrs | tr ' ' '\n' | sort -u | paste -sd ' ')"
  [ -z "$addrs" ] || echo "IPAddressAllow=$addrs"
}
install -d "$dest/etc/systemd/system/credguard-lsa-proxy.service.d"
ip_allow_dropin "$dest/etc/credguard/credguard.toml" > "$dest/etc/systemd/system/credguard-lsa-proxy.service.d/ip-allow.conf"
chmod 0644 "$dest/etc/systemd/system/credguard-lsa-proxy.service.d/ip-allow.conf"

if [ -n "$dest" ]; then
  [ "$ntlm_alternative" = 0 ] || echo "--ntlm-auth-alternative: not registered under DESTDIR (only staged)"
  echo "staged under $dest (no users created, systemd untouched)"
  exit 0
fi
# /usr/bin/ntlm_auth is where curl, Firefox and libsoup look for Samba's helper. The alternative is
# only made when asked: it changes what every program on the host runs as ntlm_auth.
if [ "$ntlm_alternative" = 1 ]; then
  if [ -e /usr/bin/ntlm_auth ] && [ ! -L /usr/bin/ntlm_auth ]; then
    echo "install.sh: /usr/bin/ntlm_auth is a file of its own (Samba's winbind?): not replaced;" >&2
    echo "  remove it or make it an alternative, then: update-alternatives --install /usr/bin/ntlm_auth ntlm_auth /usr/local/bin/credguard-ntlm-auth 10" >&2
  else
    update-alternatives --install /usr/bin/ntlm_auth ntlm_auth /usr/local/bin/credguard-ntlm-auth 10
  fi
fi
# The vault's sealing secret: made once, never replaced (that would lose every saved credential).
install -d -m 0755 /var/lib/credguard
if [ ! -e /var/lib/credguard/sealing.secret ]; then
  (umask 077 && head -c 32 /dev/urandom > /var/lib/credguard/sealing.secret.tmp)
  chmod 0600 /var/lib/credguard/sealing.secret.tmp
  mv /var/lib/credguard/sealing.secret.tmp /var/lib/credguard/sealing.secret
  echo "made the vault sealing secret /var/lib/credguard/sealing.secret (back it up somewhere safe)"
fi
# The VMM's attestation key (signs each boot's sealing key; root-only) and its public half, which
# clients (credguardctl) check the enclave's sealing key against: made once, kept afterwards.
if [ ! -e /etc/credguard/attestation.key ]; then
  (umask 077 && /usr/local/bin/credguard-vmm attestation-key /etc/credguard/attestation.key >/dev/null)
fi
chmod 0600 /etc/credguard/attestation.key
[ -e /etc/credguard/attestation.pub ] || cp /etc/credguard/attestation.key.pub /etc/credguard/attestation.pub
chmod 0644 /etc/credguard/attestation.pub
getent group credguard >/dev/null || groupadd --system credguard
getent group kvm >/dev/null || groupadd --system kvm
id credguard-vmm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \
  --gid credguard --groups kvm credguard-vmm
id credguard-proxy >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \
  --user-group --groups credguard credguard-proxy
id credguard-kcm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \
  --user-group credguard-kcm
# The KCM daemon serves every uid's cache, so the proxy lets its uid (and no other) act for them.
cat > /etc/systemd/system/credguard-lsa-proxy.service.d/kcm.conf <<CONF
# Written by scripts/install.sh: the uid of credguard-kcm, which may call the API for other uids.
[Service]
Environment=CREDGUARD_KCM_TRUSTED_UIDS=$(id -u credguard-kcm)
CONF
chmod 0644 /etc/systemd/system/credguard-lsa-proxy.service.d/kcm.conf
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$enable" = 1 ]; then
    systemctl enable --now credguard-vmm.service credguard-lsa-proxy.service credguard-kcm.socket
  fi
  echo "installed; start with: systemctl enable --now credguard-vmm credguard-lsa-proxy credguard-kcm.socket"
else
  echo "installed; systemd is not running here, so nothing was started"
fi
echo "Kerberos programs use credguard once /etc/krb5.conf's [libdefaults] has this line:"
echo "    default_ccache_name = KCM:"
echo "(credguard-kcm.socket listens where MIT and Heimdal look for KCM; it replaces sssd-kcm.socket.)"
echo "Logging on through PAM: $pam_dir/pam_credguard.so is installed; add it to /etc/pam.d/common-*"
echo "as the README's PAM section shows (auth, account, password, session)."
if [ "$ntlm_alternative" = 0 ]; then
  echo "NTLM sign-on for curl --ntlm-wb, Firefox and libsoup: /usr/local/bin/credguard-ntlm-auth; to make it"
  echo "/usr/bin/ntlm_auth, run this script again with --ntlm-auth-alternative."
fi
