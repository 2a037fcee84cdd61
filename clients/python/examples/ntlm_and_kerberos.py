#!/usr/bin/env python3
"""NTLM and Kerberos for a Python program, with the password sealed to credguard's enclave.

    python3 ntlm_and_kerberos.py alice --domain CORP --realm CORP.TEST --spn HTTP/web.corp.test --ntlm

Logs on (the password, read without echo, goes sealed to the attested enclave: the proxy relays
only ciphertext), then prints what an HTTP client would send:

- Kerberos: `Authorization: Negotiate <token>` for the SPN (the TGT never leaves the enclave);
- NTLM: `Authorization: NTLM <NEGOTIATE>`; paste the server's `WWW-Authenticate: NTLM <CHALLENGE>`
  value and it prints the `Authorization: NTLM <AUTHENTICATE>` to answer with.

The session is closed at the end. `negotiate_token` and `ntlm_handshake` are what a program would
call; tests/python_client.rs runs them against MIT's and pyspnego's acceptors.
"""
import argparse
import base64
import getpass
import sys
from typing import Callable

import credguard


def negotiate_token(client: credguard.Client, session_id: str, spn: str, mutual: bool = False) -> bytes:
    """The GSS-API (Kerberos) initial context token for `spn`, as SPNEGO's Negotiate takes it."""
    return client.kerberos_get_service_ticket(session_id, spn, mutual=mutual).gss_token


def ntlm_handshake(
    client: credguard.Client,
    session_id: str,
    server: Callable[[bytes], bytes],
    target_spn: str = "",
    channel_bindings: bytes = b"",
):
    """Sends NEGOTIATE to `server`, which answers with its CHALLENGE; returns credguard's answer
    (`.authenticate_message` to send next, `.exported_session_key` for signing and sealing)."""
    negotiate = client.ntlm_negotiate(session_id)
    challenge = server(negotiate.negotiate_message)
    return client.ntlm_authenticate(
        negotiate.context_id, challenge, target_spn=target_spn, channel_bindings=channel_bindings
    )


def _ask_the_user_for_the_challenge(negotiate: bytes) -> bytes:
    print("Authorization: NTLM " + base64.b64encode(negotiate).decode())
    answer = input("the server's WWW-Authenticate: NTLM ... value: ").strip()
    return base64.b64decode(answer.split()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("user")
    p.add_argument("--domain", default="", help="NetBIOS domain (NTLM)")
    p.add_argument("--realm", default="", help="Kerberos realm")
    p.add_argument("--kdc", default="", help="KDC host:port (the proxy's configured one otherwise)")
    p.add_argument("--spn", help="a service principal for a Kerberos token, e.g. HTTP/web.corp.test")
    p.add_argument("--ntlm", action="store_true", help="do the NTLM handshake (asks for the CHALLENGE)")
    args = p.parse_args()

    password = getpass.getpass(f"password for {args.user}: ")
    try:
        with credguard.Client() as client:
            session = client.logon(args.user, password=password, domain=args.domain, realm=args.realm, kdc=args.kdc)
            try:
                if args.spn:
                    token = negotiate_token(client, session, args.spn)
                    print("Authorization: Negotiate " + base64.b64encode(token).decode())
                if args.ntlm:
                    reply = ntlm_handshake(client, session, _ask_the_user_for_the_challenge, target_spn=args.spn or "")
                    print("Authorization: NTLM " + base64.b64encode(reply.authenticate_message).decode())
            finally:
                client.logoff(session)
    except credguard.SealError as e:
        # The client refused to send the password: the enclave's attestation did not check out.
        print(f"not sent: {e}", file=sys.stderr)
        return 2
    except credguard.CredguardError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
