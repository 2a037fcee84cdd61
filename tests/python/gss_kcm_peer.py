"""One side of a GSS-API (MIT krb5 through python-gssapi) conversation, the other side in another
process: the test relays the tokens, so the initiator never sees the acceptor's keytab and the
acceptor never sees the initiator's credential cache.

Usage: gss_kcm_peer.py initiate SERVICE@HOST   (credentials: the default ccache, e.g. KRB5CCNAME=KCM:)
       gss_kcm_peer.py accept KEYTAB           (credentials: the service's keys in KEYTAB)
Driven over stdin/stdout, one line each way, tokens in hex:

    initiator out: "TOKEN <hex>"             the first context token (an AP-REQ)
    acceptor  in:  "TOKEN <hex>"
    acceptor  out: "ACCEPTED <initiator name> <hex>"   the context is complete; the AP-REP
    initiator in:  "TOKEN <hex>"                       (the AP-REP)
    initiator out: "WRAPPED <hex>"           the context is complete; a sealed "ping" message
    acceptor  in:  "WRAPPED <hex>"
    acceptor  out: "UNWRAPPED <text>" then "WRAPPED <hex>"   the initiator's message, a sealed "pong"
    initiator in:  "WRAPPED <hex>"
    initiator out: "UNWRAPPED <text>"        and it keeps its context until:
    initiator in:  any line                  (the test has scanned its memory meanwhile)
    initiator out: "BYE"

Every wrapped message is sealed (confidentiality); a message that arrives in the clear is an
error. On an error either side prints "ERROR <what>" and exits 1.
"""
import os
import sys

import gssapi

PING = "ping from the initiator through credguard-kcm"
PONG = "pong from the acceptor"
FLAGS = (gssapi.RequirementFlag.mutual_authentication | gssapi.RequirementFlag.confidentiality
         | gssapi.RequirementFlag.integrity)


def say(line: str) -> None:
    print(line, flush=True)


def expect(word: str) -> bytes:
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != word:
        raise ValueError(f"expected {word}, got {line!r}")
    return bytes.fromhex(line[1])


def unwrap_sealed(ctx: gssapi.SecurityContext, token: bytes) -> str:
    res = ctx.unwrap(token)
    if not res.encrypted:
        raise ValueError("the peer's message was not sealed")
    return res.message.decode()


def initiate(target: str) -> None:
    name = gssapi.Name(target, gssapi.NameType.hostbased_service)
    ctx = gssapi.SecurityContext(name=name, usage="initiate", flags=FLAGS)
    say(f"TOKEN {ctx.step().hex()}")
    ctx.step(expect("TOKEN"))
    if not ctx.complete:
        raise ValueError("the context is not complete after the AP-REP")
    say(f"WRAPPED {ctx.wrap(PING.encode(), True).message.hex()}")
    say(f"UNWRAPPED {unwrap_sealed(ctx, expect('WRAPPED'))}")
    sys.stdin.readline()
    say("BYE")


def accept(keytab: str) -> None:
    os.environ["KRB5_KTNAME"] = keytab
    # The acceptor's replay cache is irrelevant for a test and needs a writable /var/tmp.
    os.environ.setdefault("KRB5RCACHETYPE", "none")
    ctx = gssapi.SecurityContext(creds=gssapi.Credentials(usage="accept"), usage="accept")
    reply = ctx.step(expect("TOKEN"))
    if not ctx.complete or not reply:
        raise ValueError("the context is not complete, or no AP-REP for mutual authentication")
    say(f"ACCEPTED {ctx.initiator_name} {reply.hex()}")
    say(f"UNWRAPPED {unwrap_sealed(ctx, expect('WRAPPED'))}")
    say(f"WRAPPED {ctx.wrap(PONG.encode(), True).message.hex()}")


def main() -> int:
    role, arg = sys.argv[1:3]
    try:
        if role == "initiate":
            initiate(arg)
        elif role == "accept":
            accept(arg)
        else:
            raise ValueError(f"unknown role {role}")
    except (gssapi.exceptions.GSSError, ValueError) as e:
        say(f"ERROR {' '.join(str(e).split())}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
