#!/usr/bin/env bash
# A throwaway Samba Active Directory domain controller for tests, on loopback, in a temp directory.
#
#   scripts/test-samba-dc.sh start DIR   provisions the domain CORP (realm CORP.TEST, DC
#                                        dc1.corp.test) in DIR, starts samba, waits until Kerberos,
#                                        kpasswd, LDAP, SMB and DNS answer on 127.0.0.1, and prints
#                                        KEY=VALUE lines for the tests (REALM, DOMAIN, DC, KDC, ...)
#   scripts/test-samba-dc.sh stop DIR    stops it (the directory stays; remove it yourself)
#
# A DC serves fixed ports (88, 464, 389, 445, 53), so one runs at a time on a host: the caller
# holds a lock (tests/support/samba.rs does). Users, all with the password PASSWORD:
#   alice        an ordinary user
#   erin         UPN erin@example.org (a UPN suffix of the forest other than the realm)
#   expired      must change the password at the next logon
#   disabled     a disabled account
#   locked       locked out (three wrong passwords; the lockout threshold is 3)
# Needs Debian's samba (with samba-ad-provision, samba-dsdb-modules, samba-vfs-modules).
set -euo pipefail

realm=CORP.TEST
domain=CORP
host=dc1
password='Alice-Passw0rd-1'
admin_password='Admin-Passw0rd-1'
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if [ "$cmd" = stop ]; then
    if [ -f "$dir/samba.pid" ]; then
        pid="$(cat "$dir/samba.pid")"
        # samba -i -M single runs one process; it exits on SIGTERM.
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/samba.pid"
    fi
    exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

for tool in samba samba-tool; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin"
    command -v "$tool" >/dev/null || {
        echo "$0: $tool is missing (apt-get install samba samba-ad-provision samba-dsdb-modules samba-vfs-modules)" >&2
        exit 3
    }
done

for port in 88 389 445 53; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "$0: 127.0.0.1:$port is taken (another DC or KDC?): a test DC needs it" >&2
        exit 1
    fi
done
mkdir -p "$dir"
samba-tool domain provision --targetdir="$dir" --realm="$realm" --domain="$domain" \
    --server-role=dc --dns-backend=SAMBA_INTERNAL --host-name="$host" --host-ip=127.0.0.1 \
    --adminpass="$admin_password" --option="interfaces=lo" --option="bind interfaces only=yes" \
    >"$dir/provision.log" 2>&1 || { cat "$dir/provision.log" >&2; exit 1; }
conf="$dir/etc/smb.conf"
tool() { samba-tool "$@" -s "$conf" >>"$dir/users.log" 2>&1 || { cat "$dir/users.log" >&2; exit 1; }; }

# Offline (before samba starts): the users and the policies the tests exercise.
tool domain passwordsettings set --account-lockout-threshold=3 --account-lockout-duration=30 \
    --reset-account-lockout-after=30
for user in alice erin expired disabled locked; do
    tool user create "$user" "$password"
done
tool user disable disabled
tool user setexpiry alice --noexpiry
# A UPN suffix of the forest, and erin's UPN in it (an enterprise name: the KDC maps it to
# erin@CORP.TEST when asked with the canonicalize flag).
base="DC=corp,DC=test"
cat >"$dir/upn.ldif" <<LDIF
dn: CN=Partitions,CN=Configuration,$base
changetype: modify
add: uPNSuffixes
uPNSuffixes: example.org

dn: CN=erin,CN=Users,$base
changetype: modify
replace: userPrincipalName
userPrincipalName: erin@example.org
LDIF
ldbmodify -H "$dir/private/sam.ldb" "$dir/upn.ldif" >>"$dir/users.log" 2>&1 || { cat "$dir/users.log" >&2; exit 1; }
# pwdLastSet=0: the password must be changed at the next logon (the KDC answers KEY_EXPIRED).
cat >"$dir/expired.ldif" <<LDIF
dn: CN=expired,CN=Users,$base
changetype: modify
replace: pwdLastSet
pwdLastSet: 0
LDIF
ldbmodify -H "$dir/private/sam.ldb" "$dir/expired.ldif" >>"$dir/users.log" 2>&1 || { cat "$dir/users.log" >&2; exit 1; }

samba -s "$conf" -i -M single >"$dir/samba.log" 2>&1 &
echo $! >"$dir/samba.pid"
# Kerberos, kpasswd, LDAP, SMB and DNS: all of them before the tests start.
for _ in $(seq 1 200); do
    ready=1
    for port in 88 464 389 445 53; do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { ready=0; break; }
    done
    [ "$ready" = 1 ] && break
    kill -0 "$(cat "$dir/samba.pid")" 2>/dev/null || { echo "$0: samba exited" >&2; cat "$dir/samba.log" >&2; exit 1; }
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "$0: samba did not answer on 88, 464, 389, 445 and 53" >&2; cat "$dir/samba.log" >&2; exit 1; }

# The host's krb5.conf for MIT's tools: the KDC given, no DNS (the host resolver does not know
# corp.test).
cat >"$dir/krb5.conf" <<CONF
[libdefaults]
 default_realm = $realm
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
[realms]
 $realm = {
  kdc = 127.0.0.1:88
  admin_server = 127.0.0.1
  kpasswd_server = 127.0.0.1:464
 }
[domain_realm]
 .corp.test = $realm
 corp.test = $realm
CONF

# Three wrong passwords lock `locked` out (the DC counts failed preauthentications).
printf 'Wrong-Passw0rd\n' >"$dir/wrong"
for _ in 1 2 3; do
    KRB5_CONFIG="$dir/krb5.conf" kinit "locked@$realm" <"$dir/wrong" >/dev/null 2>&1 || true
done

echo "REALM=$realm"
echo "DOMAIN=$domain"
echo "DC=$host.corp.test"
echo "KDC=127.0.0.1:88"
echo "KPASSWD=127.0.0.1:464"
echo "DNS=127.0.0.1:53"
echo "PASSWORD=$password"
echo "ADMIN_PASSWORD=$admin_password"
echo "SMB_CONF=$conf"
echo "KRB5_CONFIG=$dir/krb5.conf"
echo "PID=$(cat "$dir/samba.pid")"
