#!/usr/bin/env bash
# Two throwaway MIT KDCs with a cross-realm trust, for the cross-realm and referral tests,
# unprivileged, on loopback, in a temp directory.
#
#   scripts/test-kdc-cross.sh start DIR   creates realms A.XREALM.TEST and B.XREALM.TEST in DIR, starts a
#                                         krb5kdc for each on its own free port (UDP and TCP) and
#                                         prints KEY=VALUE lines for the tests (KDC_A, KDC_B, ...)
#   scripts/test-kdc-cross.sh stop DIR    stops them (the directory stays; remove it yourself)
#
# A holds alice (password Alice-Passw0rd). Both databases hold krbtgt/B.XREALM.TEST@A.XREALM.TEST
# with the same password and enctypes (the trust: A issues cross-realm TGTs B accepts). B holds the
# services host/svc.b.xrealm.test and HTTP/web.b.xrealm.test, their keytabs in DIR/svc-b.keytab and
# DIR/web-b.keytab. The krb5.conf both KDCs read maps .b.xrealm.test to B ([domain_realm]), so A's
# KDC answers a canonicalize request for host/svc.b.xrealm.test (NT-SRV-HST) with a referral. A
# also trusts C.XREALM.TEST and refers .c.xrealm.test there, but no KDC of C exists (no source
# names one): a referral the proxy cannot follow.
set -euo pipefail

realm_a=A.XREALM.TEST
realm_b=B.XREALM.TEST
password=Alice-Passw0rd
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if [ "$cmd" = stop ]; then
    for pidfile in "$dir/kdc-a.pid" "$dir/kdc-b.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

# shellcheck source=scripts/kdc-common.sh
. "$(dirname "$0")/kdc-common.sh"
port_a="$(free_port)"
port_b="$(free_port)"
while [ "$port_b" = "$port_a" ]; do port_b="$(free_port)"; done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
enctypes="aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"

cat > "$dir/krb5.conf" <<CONF
[libdefaults]
 default_realm = $realm_a
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
[realms]
 $realm_a = {
  kdc = 127.0.0.1:$port_a
 }
 $realm_b = {
  kdc = 127.0.0.1:$port_b
 }
[domain_realm]
 .b.xrealm.test = $realm_b
 .a.xrealm.test = $realm_a
 .c.xrealm.test = C.XREALM.TEST
CONF

# One kdc.conf per KDC: each serves its own realm on its own port.
kdc_conf() { # realm letter port
    cat > "$dir/kdc-$2.conf" <<CONF
[kdcdefaults]
 kdc_listen = 127.0.0.1:$3
 kdc_tcp_listen = 127.0.0.1:$3
[realms]
 $1 = {
  database_name = $dir/principal-$2
  key_stash_file = $dir/stash-$2
  acl_file = $dir/kadm5.acl
  supported_enctypes = $enctypes
  kdc_listen = 127.0.0.1:$3
  kdc_tcp_listen = 127.0.0.1:$3
  max_life = 10h
  max_renewable_life = 7d
 }
[logging]
 kdc = FILE:$dir/kdc-$2.log
CONF
}
kdc_conf "$realm_a" a "$port_a"
kdc_conf "$realm_b" b "$port_b"
: > "$dir/kadm5.acl"
export KRB5_CONFIG="$dir/krb5.conf"

trust="krbtgt/$realm_b@$realm_a"
trust_pw="trust-$RANDOM-$RANDOM-$RANDOM"
{
    export KRB5_KDC_PROFILE="$dir/kdc-a.conf"
    kdb5_util create -s -P "master-$RANDOM-$RANDOM" -r "$realm_a"
    kadmin.local -r "$realm_a" -q "addprinc +requires_preauth -pw $password alice"
    kadmin.local -r "$realm_a" -q "addprinc -e aes256-cts:normal,aes128-cts:normal -pw $trust_pw $trust"
    # A trust toward a realm with no KDC anywhere: A refers .c.xrealm.test there.
    kadmin.local -r "$realm_a" -q "addprinc -randkey krbtgt/C.XREALM.TEST@$realm_a"
    export KRB5_KDC_PROFILE="$dir/kdc-b.conf"
    kdb5_util create -s -P "master-$RANDOM-$RANDOM" -r "$realm_b"
    kadmin.local -r "$realm_b" -q "addprinc -e aes256-cts:normal,aes128-cts:normal -pw $trust_pw $trust"
    kadmin.local -r "$realm_b" -q "addprinc -randkey host/svc.b.xrealm.test"
    kadmin.local -r "$realm_b" -q "ktadd -k $dir/svc-b.keytab host/svc.b.xrealm.test"
    kadmin.local -r "$realm_b" -q "addprinc -randkey HTTP/web.b.xrealm.test"
    kadmin.local -r "$realm_b" -q "ktadd -k $dir/web-b.keytab HTTP/web.b.xrealm.test"
} >"$dir/setup.log" 2>&1

start_kdc() { # realm letter
    KRB5_KDC_PROFILE="$dir/kdc-$2.conf" krb5kdc -n -r "$1" -P "$dir/kdc-$2.pid" >>"$dir/kdc-$2.out" 2>&1 &
    local pid=$!
    # krb5kdc -n stays in the foreground; it writes its pid file once listening.
    for _ in $(seq 1 100); do
        [ -s "$dir/kdc-$2.pid" ] && break
        sleep 0.02
    done
    [ -s "$dir/kdc-$2.pid" ] || echo "$pid" > "$dir/kdc-$2.pid"
}
start_kdc "$realm_a" a
start_kdc "$realm_b" b

echo "KDC_A=127.0.0.1:$port_a"
echo "KDC_B=127.0.0.1:$port_b"
echo "REALM_A=$realm_a"
echo "REALM_B=$realm_b"
echo "PASSWORD=$password"
echo "KRB5_CONFIG=$dir/krb5.conf"
echo "KRB5_KDC_PROFILE_A=$dir/kdc-a.conf"
echo "KRB5_KDC_PROFILE_B=$dir/kdc-b.conf"
echo "TRUST=$trust"
echo "SPN=host/svc.b.xrealm.test"
echo "KEYTAB=$dir/svc-b.keytab"
echo "HTTP_SPN=HTTP/web.b.xrealm.test"
echo "HTTP_KEYTAB=$dir/web-b.keytab"
