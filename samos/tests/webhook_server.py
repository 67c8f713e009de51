"""A real HTTP server that records webhook deliveries, for the alerting tests.

    python3 webhook_server.py PORT DIR SECRET [CERT KEY]

With CERT and KEY (PEM) it serves HTTPS.

Each POST is appended to DIR/requests.jsonl as {"status", "delivery", "event", "signature_ok",
"body"}: the signature (X-Samos-Signature: t=..,v1=..) is checked with Python's own hmac
module. While the file DIR/fail exists every request is answered 503 (and recorded), else 200.
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIR, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()


def signature_ok(header, body):
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        expected = hmac.new(SECRET, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["v1"])
    except Exception:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        status = 503 if os.path.exists(os.path.join(DIR, "fail")) else 200
        record = {
            "status": status,
            "delivery": self.headers.get("x-samos-delivery"),
            "event": self.headers.get("x-samos-event"),
            "signature_ok": signature_ok(self.headers.get("x-samos-signature", ""), body),
            "body": json.loads(body),
        }
        with open(os.path.join(DIR, "requests.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
