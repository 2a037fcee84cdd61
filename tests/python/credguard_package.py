"""Uses the installed `credguard` package (clients/python) against the real stack, for
tests/python_client.rs, which runs it with the Python of a venv the package was pip-installed in.

Usage: credguard_package.py ARGS_JSON
  ARGS_JSON: user, domain, realm, kdc, password, spn, keytab, ntlm_users, examples_dir, and the
  other_attestation_pub and other_signer_pub of the refusals.
  The socket, the attestation key and the signer key come from CREDGUARD_SOCKET,
  CREDGUARD_ATTESTATION_PUB and CREDGUARD_SIGNER_PUB, as for any client; KRB5_CONFIG names the
  test realm for MIT's acceptor.

Checks the enclave's attestation, logs on sealed, does an NTLM handshake with pyspnego's acceptor
(ntlm_acceptor.py) and gets a service ticket for MIT's acceptor (gss_accept.py), both through the
example's functions, then provokes the refusals and errors the package types. Prints what it saw
as JSON on stdout; the Rust test judges it. Exits non-zero (with a traceback) on anything else.
"""
import json
import os
import subprocess
import sys

import credguard

HERE = os.path.dirname(os.path.abspath(__file__))


class NtlmAcceptor:
    """pyspnego's NTLM acceptor (ntlm_acceptor.py) with the accounts in `users`."""

    def __init__(self, users: str):
        env = dict(os.environ, NTLM_USER_FILE=users)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ntlm_acceptor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def step(self, message: bytes) -> str:
        self.proc.stdin.write(message.hex() + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def challenge(self, negotiate: bytes) -> bytes:
        return bytes.fromhex(self.step(negotiate))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def mit_accepts(keytab: str, token: bytes) -> dict:
    """MIT's acceptor's verdict on a GSS-API token (gss_accept.py)."""
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "gss_accept.py"), keytab],
        input=token.hex(),
        capture_output=True,
        text=True,
    )
    verdict = json.loads(out.stdout) if out.stdout.strip() else {"error": out.stderr}
    verdict["exit"] = out.returncode
    return verdict


def typed_error(f) -> dict:
    """Calls `f`, which must fail with a credguard error; returns what the error says."""
    try:
        f()
    except credguard.CredguardError as e:
        code = getattr(e, "code", None)
        return {
            "type": type(e).__name__,
            "sealing": isinstance(e, credguard.SealError),
            "code": code.name if code is not None else None,
            "message": str(e),
        }
    raise AssertionError(f"{f} did not fail")


def ntlm_and_kerberos(c: credguard.Client, a: dict, session: str) -> dict:
    sys.path.insert(0, a["examples_dir"])
    import ntlm_and_kerberos as example

    acceptor = NtlmAcceptor(a["ntlm_users"])
    try:
        reply = example.ntlm_handshake(c, session, acceptor.challenge, target_spn="HTTP/web.corp.test")
        verdict = acceptor.step(reply.authenticate_message)
    finally:
        acceptor.close()
    tgt = c.kerberos_get_tgt(session)
    token = example.negotiate_token(c, session, a["spn"], mutual=True)
    return {
        "ntlm": {"verdict": verdict, "exported_session_key": reply.exported_session_key.hex()},
        "tgt_principal": tgt.client_principal,
        "kerberos": mit_accepts(a["keytab"], token),
    }


def refusals(c: credguard.Client, a: dict, session: str) -> dict:
    def logon_with(**options):
        with credguard.Client(**options) as other:
            other.logon(a["user"], password=a["password"], domain=a["domain"], realm=a["realm"], kdc=a["kdc"])

    errors = {
        # The VMM's attestation does not verify with another key: nothing is sent.
        "wrong_attestation_key": typed_error(lambda: logon_with(attestation_pub=a["other_attestation_pub"])),
        # An enclave signed by another key than the pinned signer's: nothing is sent.
        "wrong_signer": typed_error(lambda: logon_with(signer_pub=a["other_signer_pub"])),
        "plaintext": typed_error(lambda: c.logon(a["user"], password=a["password"], sealed=False)),
        "unknown_session": typed_error(lambda: c.logoff("00" * 16)),
        "delegation": typed_error(lambda: c.kerberos_get_service_ticket(session, a["spn"], delegate=True)),
    }
    wrong = c.logon(a["user"], password="Wrong-Passw0rd", realm=a["realm"], kdc=a["kdc"])
    errors["wrong_password"] = typed_error(lambda: c.kerberos_get_tgt(wrong))
    c.logoff(wrong)
    return errors


def main() -> int:
    a = json.loads(sys.argv[1])
    seen = {"package": credguard.__file__}
    with credguard.Client() as c:
        attested = c.attest()
        seen["attested"] = {"measurement": attested.measurement, "public_key": attested.public_key.hex()}
        session = c.logon(a["user"], password=a["password"], domain=a["domain"], realm=a["realm"], kdc=a["kdc"])
        mine = [s for s in c.sessions() if s.session_id == session]
        seen["session"] = {"sealed": mine[0].sealed, "secret_kind": mine[0].secret_kind, "user": mine[0].user}
        seen.update(ntlm_and_kerberos(c, a, session))
        seen["errors"] = refusals(c, a, session)
        seen["sessions_before_logoff"] = [s.session_id for s in c.sessions()]
        c.logoff(session)
        seen["sessions_after_logoff"] = [s.session_id for s in c.sessions()]
        seen["session_id"] = session
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
