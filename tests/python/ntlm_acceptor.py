#!/usr/bin/env python3
"""An independent NTLM acceptor (pyspnego) for credguard's end-to-end NTLM tests.

Driven over stdin/stdout, one line each way:

    in:  NEGOTIATE message, hex          out: CHALLENGE message, hex
    in:  AUTHENTICATE message, hex       out: "ACCEPTED <session key hex>" or "REJECTED <error>"

The accounts are read by pyspnego from NTLM_USER_FILE (lines DOMAIN:USER:PASSWORD). With an
argument, it is the channel bindings' application data (hex), which the acceptor then requires.
"""
import sys


def main() -> int:
    try:
        import spnego
        from spnego.channel_bindings import GssChannelBindings
    except ImportError as e:
        print(f"MISSING {e}", flush=True)
        return 3

    cbt = None
    if len(sys.argv) > 1 and sys.argv[1]:
        cbt = GssChannelBindings(application_data=bytes.fromhex(sys.argv[1]))
    server = spnego.server(protocol="ntlm", channel_bindings=cbt)

    negotiate = bytes.fromhex(sys.stdin.readline().strip())
    challenge = server.step(negotiate)
    print(challenge.hex(), flush=True)

    authenticate = bytes.fromhex(sys.stdin.readline().strip())
    try:
        server.step(authenticate)
    except Exception as e:  # any failure of the acceptor is a rejection, reported as such
        message = f"{type(e).__name__}: {e}".replace("\n", " ")
        print(f"REJECTED {message}", flush=True)
        return 0
    if not server.complete:
        print("REJECTED the context is not complete", flush=True)
        return 0
    print(f"ACCEPTED {server.session_key.hex()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
