"""A real SMTP server (aiosmtpd) that records mail, for the alerting tests.

    python3 smtp_server.py PORT DIR CERT KEY USER PASSWORD [implicit]

STARTTLS is required (with CERT/KEY), or with `implicit` TLS from the first byte (SMTPS),
then AUTH (USER/PASSWORD, PLAIN or LOGIN). Each accepted mail is appended to DIR/mail.jsonl
as {"from", "to", "tls", "user", "data"}.
"""

import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

PORT, DIR, CERT, KEY, USER, PASSWORD = sys.argv[1:7]
IMPLICIT = sys.argv[7:8] == ["implicit"]


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "user": session.auth_data if isinstance(session.auth_data, str) else None,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        with open(os.path.join(DIR, "mail.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(CERT, KEY)
common = dict(
    hostname="127.0.0.1",
    port=int(PORT),
    authenticator=authenticator,
    auth_required=True,
)
if IMPLICIT:
    # TLS from the first byte: AUTH is over TLS already.
    controller = Controller(Recorder(), ssl_context=context, auth_require_tls=False, **common)
else:
    controller = Controller(Recorder(), tls_context=context, require_starttls=True, **common)
controller.start()
while True:
    time.sleep(3600)
