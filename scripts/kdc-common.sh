# Shared by scripts/test-kdc.sh and scripts/test-kdc-cross.sh (sourced, not run): the MIT KDC tools
# check and a loopback port free for both UDP and TCP.

for tool in krb5kdc kdb5_util kadmin.local; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin"
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing (apt-get install krb5-kdc krb5-admin-server krb5-user)" >&2; exit 3; }
done

# A port free for both UDP and TCP on loopback.
free_port() {
    python3 -c '
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
print(p)'
}
