#!/usr/bin/env bash
# Runs scripts/install.sh for real, then the installed units' ExecStart= lines as systemd would
# (their users, groups, runtime and state directories, credentials, socket activation), and asks
# the installed credguardctl, with no option, for the status. All of it in a private mount
# namespace (run under `unshare --mount --propagation private`): what the install writes to /etc,
# /usr/local, /var/lib, /run and libpam's module directory lands in WORK, and the host is left as
# it was.
#
#   run-installed.sh REPO WORK BIN_DIR   (as root, inside the private mount namespace; BIN_DIR
#                                          holds the built binaries and libpam_credguard.so)
#
# systemd itself is not running here; what it would do for these units is done by hand below,
# from the units' own lines, so a unit that names a wrong path or user fails this script.
set -euo pipefail
repo="$1" work="$2" bin_dir="$3"
pam_dir="/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/security"

private_copy() { # DIR: the install's writes to DIR go to a copy of it in WORK
  mkdir -p "$work/fs$1"
  [ ! -d "$1" ] || cp -a "$1/." "$work/fs$1/"
  mkdir -p "$1"
  mount --bind "$work/fs$1" "$1"
}
for d in /etc /usr/local "$pam_dir" /var/lib/credguard /run "$repo/images/out"; do
  private_copy "$d"
done
# systemd's credentials directories (%d), one per unit.
mkdir -p "$work/creds"

"$repo/scripts/install.sh" --dev-key --prebuilt "$bin_dir"

units=/etc/systemd/system
exec_start() { # UNIT: its ExecStart= line, continuation lines joined, %d replaced
  awk '/^ExecStart=/ { on = 1 } on { line = line $0; if (!sub(/\\$/, "", line)) exit }
       END { sub(/^ExecStart=/, "", line); print line }' "$units/$1" | sed "s|%d|$work/creds/$1|g"
}
memlock() { # UNIT: LimitMEMLOCK= as prlimit takes it
  local v; v="$(value "$1" LimitMEMLOCK)"
  case "$v" in
    infinity) echo unlimited ;;
    *M) echo $((${v%M} * 1024 * 1024)) ;;
    *K) echo $((${v%K} * 1024)) ;;
    "") echo 8388608 ;;
    *) echo "$v" ;;
  esac
}
value() { # UNIT KEY: the value of KEY= in UNIT (the last one)
  sed -n "s/^$2=//p" "$units/$1" | tail -n 1
}
runtime_dir() { # UNIT: /run/RuntimeDirectory, owned by the unit's user, with its mode
  local dir="/run/$(value "$1" RuntimeDirectory)"
  install -d -o "$(value "$1" User)" -g "$(value "$1" Group)" -m "$(value "$1" RuntimeDirectoryMode)" "$dir"
}
load_credentials() { # UNIT: LoadCredential=NAME:PATH, as systemd copies them (0400, the unit's user)
  local d="$work/creds/$1"
  install -d -m 0700 -o "$(value "$1" User)" "$d"
  sed -n 's/^LoadCredential=//p' "$units/$1" | while IFS=: read -r name path; do
    install -m 0400 -o "$(value "$1" User)" "$path" "$d/$name"
  done
}
limits() { # UNIT: prlimit with the unit's LimitMEMLOCK= and LimitCORE=0, where root may raise it
  if [ "$raise_memlock" = 1 ]; then
    echo prlimit --memlock="$(memlock "$1")" --core=0
  else
    echo prlimit --core=0
  fi
}
# systemd raises RLIMIT_MEMLOCK with CAP_SYS_RESOURCE; a container's root may lack it, and then
# the services run with the current limit (they say so in their logs, and work).
raise_memlock=0
if prlimit --memlock=unlimited true 2>/dev/null; then
  raise_memlock=1
else
  echo "note: root may not raise RLIMIT_MEMLOCK here; LimitMEMLOCK= is not applied" >&2
fi
environment() { # UNIT: the Environment= lines of its drop-ins, as NAME=value words
  cat "$units/$1.d/"*.conf 2>/dev/null | sed -n 's/^Environment=//p'
}

# The host's /dev/kvm may be root's alone; udev gives the kvm group access, which the VMM's unit
# relies on (SupplementaryGroups=kvm). A private node with that mode stands in for the rule.
mkdir -p "$work/dev"
mount -t tmpfs -o mode=0755 tmpfs "$work/dev"
mknod -m 0660 "$work/dev/kvm" c 10 232
chgrp kvm "$work/dev/kvm"
mount --bind "$work/dev/kvm" /dev/kvm

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

runtime_dir credguard-vmm.service
load_credentials credguard-vmm.service
(
  umask "$(value credguard-vmm.service UMask)"
  # shellcheck disable=SC2046
  exec $(limits credguard-vmm.service) \
    setpriv --reuid=credguard-vmm --regid=credguard --groups="$(value credguard-vmm.service SupplementaryGroups)" \
    --inh-caps=-all --bounding-set=-all $(exec_start credguard-vmm.service)
) >"$work/vmm.log" 2>&1 &
pids+=($!)

runtime_dir credguard-lsa-proxy.service
install -d -o credguard-proxy -g credguard-proxy -m 0700 /var/lib/credguard/vault
(
  umask "$(value credguard-lsa-proxy.service UMask)"
  # shellcheck disable=SC2046
  export $(environment credguard-lsa-proxy.service)
  # shellcheck disable=SC2046
  exec $(limits credguard-lsa-proxy.service) setpriv --reuid=credguard-proxy --regid=credguard-proxy \
    --groups="$(value credguard-lsa-proxy.service SupplementaryGroups)" --inh-caps=-all --bounding-set=-all \
    $(exec_start credguard-lsa-proxy.service)
) >"$work/proxy.log" 2>&1 &
pids+=($!)

# Socket activation as credguard-kcm.socket does it: the listening socket is made first, and the
# daemon gets it as fd 3.
kcm_socket="$(value credguard-kcm.socket ListenStream)"
# shellcheck disable=SC2046
umask "$(value credguard-kcm.service UMask)"
systemd-socket-activate --listen="$kcm_socket" \
  setpriv --reuid=credguard-kcm --regid=credguard-kcm --init-groups --inh-caps=-all --bounding-set=-all \
  $(exec_start credguard-kcm.service) >"$work/kcm.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -qs "Listening on" "$work/kcm.log" && break; sleep 0.1; done
chmod "$(value credguard-kcm.socket SocketMode)" "$kcm_socket"

# An ordinary user asks the installed credguardctl, with its defaults (socket, attestation key,
# signer), until the enclave is up.
for _ in $(seq 1 100); do
  if setpriv --reuid=65534 --regid=65534 --clear-groups /usr/local/bin/credguardctl --json status \
      >"$work/status.json" 2>"$work/status.err" && grep -q '"ready"' "$work/status.json"; then
    # MIT's klist, as that user, through the socket-activated KCM daemon.
    echo "klist: $(setpriv --reuid=65534 --regid=65534 --clear-groups env KRB5CCNAME=KCM: klist 2>&1)"
    cat "$work/status.json"
    exit 0
  fi
  sleep 0.2
done
echo "credguardctl status never answered ready:" >&2
cat "$work/status.err" "$work/vmm.log" "$work/proxy.log" >&2
exit 1
