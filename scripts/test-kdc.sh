#!/usr/bin/env bash
# A throwaway MIT KDC for tests and benchmarks, unprivileged, on loopback, in a temp directory.
#
#   scripts/test-kdc.sh start DIR [PORT]   creates the realm CREDGUARD.TEST in DIR, starts krb5kdc
#                                          on 127.0.0.1:PORT (UDP and TCP; default: a free port) and
#                                          prints KEY=VALUE lines for the tests (KDC, REALM, ...)
#   scripts/test-kdc.sh stop DIR           stops it (the directory stays; remove it yourself)
#
# Principals: alice (password Alice-Passw0rd, every enctype), alice17 alice18 alice19 alice20
# alice23 (one enctype each, same password; all but alice17 require preauthentication),
# aliceshort (tickets of 20 s, for renewal), aliceexpired (its password expired in 2001),
# alice18's keytab in DIR/alice18.keytab, and the service host/svc.credguard.test with its keytab in DIR/svc.keytab, the web service
# HTTP/web.credguard.test with its keytab in DIR/http.keytab (for Apache mod_auth_gssapi), and
# services HTTP/web01..web50.credguard.test and HTTP/bench001..bench200.credguard.test (random
# keys; the bench ones give benchmarks a service no cache holds yet for every round). kadmind
# serves kpasswd on 127.0.0.1 (KPASSWD=host:port). Needs Debian's krb5-kdc, krb5-admin-server and
# krb5-user.
set -euo pipefail

realm=CREDGUARD.TEST
password=Alice-Passw0rd
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }

if [ "$cmd" = stop ]; then
    for pidfile in "$dir/kdc.pid" "$dir/kadmind.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }

# shellcheck source=scripts/kdc-common.sh
. "$(dirname "$0")/kdc-common.sh"
port="${3:-}"
[ -n "$port" ] || port="$(free_port)"
# kadmind: its admin port (TCP) and its kpasswd port (UDP and TCP), both on loopback.
kadmind_port="$(free_port)"
kpasswd_port="$(free_port)"
while [ "$kpasswd_port" = "$kadmind_port" ] || [ "$kpasswd_port" = "$port" ]; do kpasswd_port="$(free_port)"; done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
enctypes="aes256-cts-hmac-sha384-192:normal aes128-cts-hmac-sha256-128:normal aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal arcfour-hmac:normal"

# MIT profiles take no inline comments. allow_rc4 lets the KDC issue rc4-hmac session keys (Debian's
# CVE-2025-3576 fix refuses them otherwise): the rc4 test needs it; credguard refuses rc4 unless
# its own kerberos.allow_rc4 is set.
cat > "$dir/krb5.conf" <<CONF
[libdefaults]
 default_realm = $realm
 allow_rc4 = true
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 udp_preference_limit = 1465
[realms]
 $realm = {
  kdc = 127.0.0.1:$port
 }
[domain_realm]
 svc.credguard.test = $realm
 .credguard.test = $realm
CONF

cat > "$dir/kdc.conf" <<CONF
[kdcdefaults]
 kdc_listen = 127.0.0.1:$port
 kdc_tcp_listen = 127.0.0.1:$port
[realms]
 $realm = {
  database_name = $dir/principal
  key_stash_file = $dir/stash
  acl_file = $dir/kadm5.acl
  supported_enctypes = $enctypes
  kdc_listen = 127.0.0.1:$port
  kdc_tcp_listen = 127.0.0.1:$port
  max_life = 10h
  max_renewable_life = 7d
  kadmind_port = $kadmind_port
  kadmind_listen = 127.0.0.1:$kadmind_port
  kpasswd_port = $kpasswd_port
  kpasswd_listen = 127.0.0.1:$kpasswd_port
 }
[logging]
 kdc = FILE:$dir/kdc.log
 admin_server = FILE:$dir/kadmind.log
CONF
: > "$dir/kadm5.acl"

export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf"
kdb5_util create -s -P "master-$RANDOM-$RANDOM" -r "$realm" >"$dir/setup.log" 2>&1
{
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -pw $password alice"
    kadmin.local -r "$realm" -q "addprinc -e aes128-cts-hmac-sha1-96:normal -pw $password alice17"
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -e aes256-cts-hmac-sha1-96:normal -pw $password alice18"
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -e aes128-cts-hmac-sha256-128:normal -pw $password alice19"
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -e aes256-cts-hmac-sha384-192:normal -pw $password alice20"
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -e arcfour-hmac:normal -pw $password alice23"
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -maxlife \"20 seconds\" -pw $password aliceshort"
    # An expired password (must be changed through kpasswd before it logs on).
    kadmin.local -r "$realm" -q "addprinc +requires_preauth -pwexpire \"2001-01-01 00:00:00 UTC\" -pw $password aliceexpired"
    kadmin.local -r "$realm" -q "ktadd -norandkey -k $dir/alice18.keytab alice18"
    kadmin.local -r "$realm" -q "addprinc -randkey host/svc.credguard.test"
    kadmin.local -r "$realm" -q "ktadd -k $dir/svc.keytab host/svc.credguard.test"
    kadmin.local -r "$realm" -q "addprinc -randkey HTTP/web.credguard.test"
    kadmin.local -r "$realm" -q "ktadd -k $dir/http.keytab HTTP/web.credguard.test"
    # Many services, for tests of one user fetching tickets for several at once (one kadmin run).
    {
        for i in $(seq -w 1 50); do echo "addprinc -randkey HTTP/web$i.credguard.test"; done
        for i in $(seq -w 1 200); do echo "addprinc -randkey HTTP/bench$i.credguard.test"; done
    } | kadmin.local -r "$realm"
} >>"$dir/setup.log" 2>&1

# KDC_FAKETIME (e.g. "+1h"): run the KDC with its clock that far off, to test clock-skew handling
# against the real KDC (libfaketime; apt-get install faketime).
if [ -n "${KDC_FAKETIME:-}" ]; then
    command -v faketime >/dev/null || { echo "$0: faketime is missing (apt-get install faketime)" >&2; exit 3; }
    faketime -f "$KDC_FAKETIME" krb5kdc -n -r "$realm" -P "$dir/kdc.pid" >>"$dir/kdc.out" 2>&1 &
else
    krb5kdc -n -r "$realm" -P "$dir/kdc.pid" >>"$dir/kdc.out" 2>&1 &
fi
# krb5kdc -n stays in the foreground; it writes its pid file once listening.
for _ in $(seq 1 100); do
    [ -s "$dir/kdc.pid" ] && break
    sleep 0.02
done
[ -s "$dir/kdc.pid" ] || echo $! > "$dir/kdc.pid"

# kadmind serves kpasswd (RFC 3244 password changes) with the database's own kadmin/changepw key.
if command -v kadmind >/dev/null; then
    kadmind -nofork -r "$realm" -P "$dir/kadmind.pid" >>"$dir/kadmind.out" 2>&1 &
    for _ in $(seq 1 100); do
        [ -s "$dir/kadmind.pid" ] && break
        sleep 0.02
    done
    [ -s "$dir/kadmind.pid" ] || echo $! > "$dir/kadmind.pid"
    echo "KPASSWD=127.0.0.1:$kpasswd_port"
fi

echo "KDC=127.0.0.1:$port"
echo "REALM=$realm"
echo "PASSWORD=$password"
echo "KRB5_CONFIG=$dir/krb5.conf"
echo "KRB5_KDC_PROFILE=$dir/kdc.conf"
echo "KEYTAB=$dir/svc.keytab"
echo "SPN=host/svc.credguard.test"
echo "HTTP_KEYTAB=$dir/http.keytab"
echo "HTTP_SPN=HTTP/web.credguard.test"
echo "PID=$(cat "$dir/kdc.pid")"
