#!/usr/bin/env python3
"""A small HTTP server on a loopback port that demands NTLM, for credguard's end-to-end test of
credguard-ntlm-auth under `curl --ntlm-wb`.

Prints "PORT <n>" once it listens on 127.0.0.1. A request without NTLM gets 401 with
`WWW-Authenticate: NTLM`; the NTLM handshake runs per connection (as NTLM over HTTP does) with
pyspnego as the acceptor, which reads the accounts from NTLM_USER_FILE (lines
DOMAIN:USER:PASSWORD) and checks the NTLMv2 response and the MIC. A verified AUTHENTICATE gets
200 with the body "ACCEPTED DOMAIN\\user workstation=NAME"; a rejected one 401 with
"REJECTED <error>". Each verdict is also printed to standard output, one line each.
"""
import base64
import http.server
import struct
import sys


def field(message: bytes, at: int) -> str:
    """A string field (len, maxlen, offset) of an AUTHENTICATE message: UTF-16LE under
    NTLMSSP_NEGOTIATE_UNICODE, else OEM (ASCII here)."""
    length, _, offset = struct.unpack_from("<HHI", message, at)
    unicode = struct.unpack_from("<I", message, 60)[0] & 1
    return message[offset:offset + length].decode("utf-16-le" if unicode else "latin-1", "replace")


class Handler(http.server.BaseHTTPRequestHandler):
    # NTLM authenticates a connection: keep it open across the handshake.
    protocol_version = "HTTP/1.1"
    acceptor = None

    def log_message(self, *args) -> None:
        pass

    def reply(self, code: int, body: str, headers=()) -> None:
        data = (body + "\n").encode()
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(f"{code} {body}", flush=True)

    def do_GET(self) -> None:
        import spnego

        auth = self.headers.get("Authorization", "")
        if not auth.startswith("NTLM "):
            self.acceptor = None
            return self.reply(401, "NTLM required", [("WWW-Authenticate", "NTLM")])
        try:
            token = base64.b64decode(auth[5:].strip(), validate=True)
            kind = struct.unpack_from("<I", token, 8)[0]
        except Exception as e:  # a malformed header is a rejection, reported as such
            return self.reply(401, f"REJECTED bad header: {e}", [("WWW-Authenticate", "NTLM")])
        if kind == 1:
            self.acceptor = spnego.server(protocol="ntlm")
            challenge = self.acceptor.step(token)
            header = "NTLM " + base64.b64encode(challenge).decode()
            return self.reply(401, "CHALLENGE", [("WWW-Authenticate", header)])
        if kind != 3 or self.acceptor is None:
            return self.reply(401, "REJECTED no handshake on this connection", [("WWW-Authenticate", "NTLM")])
        acceptor, self.acceptor = self.acceptor, None
        try:
            acceptor.step(token)
            if not acceptor.complete:
                raise RuntimeError("the context is not complete")
        except Exception as e:
            message = f"{type(e).__name__}: {e}".replace("\n", " ")
            return self.reply(401, f"REJECTED {message}", [("WWW-Authenticate", "NTLM")])
        who = f"{field(token, 28)}\\{field(token, 36)}"
        self.reply(200, f"ACCEPTED {who} workstation={field(token, 44)}")


def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
