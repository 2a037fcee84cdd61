"""An independent GSS-API acceptor (MIT krb5 through python-gssapi) for credguard's tokens.

Usage: gss_accept.py KEYTAB < token-hex
Prints JSON: the initiator's name, whether the context completed, whether an AP-REP (mutual
authentication) was produced, and the context's delegation flag. Exits 1 if the token is refused.
Needs KRB5_CONFIG for the test realm in the environment.
"""
import json
import os
import sys

import gssapi

os.environ["KRB5_KTNAME"] = sys.argv[1]
# The acceptor's replay cache is irrelevant for a test and needs a writable /var/tmp.
os.environ.setdefault("KRB5RCACHETYPE", "none")
token = bytes.fromhex(sys.stdin.read().strip())
creds = gssapi.Credentials(usage="accept")
ctx = gssapi.SecurityContext(creds=creds, usage="accept")
try:
    out = ctx.step(token)
except gssapi.exceptions.GSSError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
print(json.dumps({
    "initiator": str(ctx.initiator_name),
    "complete": bool(ctx.complete),
    "mutual_reply": bool(out),
    "delegate_flag": bool(ctx.actual_flags & gssapi.RequirementFlag.delegate_to_peer),
    "delegated_creds": ctx.delegated_creds is not None,
}))
