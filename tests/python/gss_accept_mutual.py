"""MIT krb5's acceptor (python-gssapi) for credguard's mutual authentication and channel bindings.

Usage: gss_accept_mutual.py KEYTAB [--cb-app-data-hex HEX] [--spnego] < token-hex
Accepts the token (the Kerberos mechanism, or SPNEGO with --spnego) with channel bindings whose
application data is HEX (no addresses) if given. Prints JSON: the initiator's name, whether the
context completed, the mechanism, and the acceptor's output token (hex: the AP-REP, in its RFC 4121
token for the Kerberos mechanism). Exits 1 with {"error": ...} if the token is refused.
Needs KRB5_CONFIG for the test realm in the environment.
"""
import argparse
import json
import os
import sys

import gssapi
import gssapi.raw

parser = argparse.ArgumentParser()
parser.add_argument("keytab")
parser.add_argument("--cb-app-data-hex", default=None)
parser.add_argument("--spnego", action="store_true")
args = parser.parse_args()

os.environ["KRB5_KTNAME"] = args.keytab
# The acceptor's replay cache is irrelevant for a test and needs a writable /var/tmp.
os.environ.setdefault("KRB5RCACHETYPE", "none")
token = bytes.fromhex(sys.stdin.read().strip())
mech = gssapi.Mechanism.from_sasl_name("SPNEGO") if args.spnego else gssapi.MechType.kerberos
creds = gssapi.Credentials(usage="accept", mechs=[mech])
bindings = None
if args.cb_app_data_hex is not None:
    bindings = gssapi.raw.ChannelBindings(application_data=bytes.fromhex(args.cb_app_data_hex))
ctx = gssapi.SecurityContext(creds=creds, usage="accept", channel_bindings=bindings)
try:
    out = ctx.step(token)
except gssapi.exceptions.GSSError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
print(json.dumps({
    "initiator": str(ctx.initiator_name),
    "complete": bool(ctx.complete),
    "mech": str(ctx.mech.dotted_form) if ctx.mech else "",
    "output_token": (out or b"").hex(),
}))
