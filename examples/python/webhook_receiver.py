#!/usr/bin/env python3
"""A settle webhook receiver built on stock libraries.

Checks both signatures of every delivery:
  - `v1` (HMAC-SHA256, the subscriber's secret) with the `standardwebhooks` package,
    which also refuses timestamps more than five minutes off;
  - `v1a` (Ed25519, the vendor's key) with `cryptography`, against the vendor's JWKS,
    so a receiver that holds only public keys can check where an event came from.
Deduplicates by `webhook-id` (deliveries are at least once) and appends each new event
to a JSON Lines file.

    pip install standardwebhooks cryptography
    python3 webhook_receiver.py --jwks jwks.json --secret-file secret.txt --out events.jsonl

Options for testing a sender: `--fail-while FILE` answers 503 while FILE exists;
`--fail-first N` answers 503 to the first N deliveries; `--tls-dir DIR` serves https
with a certificate for 127.0.0.1 from a throwaway CA written to DIR/ca.pem (trust it
with `settle serve --webhook-ca DIR/ca.pem`).
"""

import argparse
import base64
import datetime
import http.server
import json
import ipaddress
import os
import ssl
import sys
import threading

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load_keys(path):
    with open(path, encoding="utf-8") as f:
        jwks = json.load(f)
    return [
        (k["kid"], Ed25519PublicKey.from_public_bytes(b64url(k["x"])), k.get("valid_from"), k.get("valid_until"))
        for k in jwks["keys"]
        if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
    ]


def verify_v1a(keys, msg_id, timestamp, body, header):
    """The kid of the vendor key whose Ed25519 signature is in `header`, else None."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    ts = int(timestamp)
    for entry in header.split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        for kid, key, valid_from, valid_until in keys:
            if valid_from is not None and ts < valid_from:
                continue
            if valid_until is not None and ts >= valid_until:
                continue
            try:
                key.verify(base64.b64decode(sig), content)
                return kid
            except (InvalidSignature, ValueError):
                pass
    return None


class Receiver(http.server.BaseHTTPRequestHandler):
    server_version = "settle-webhook-receiver"

    def log_message(self, fmt, *args):
        sys.stderr.write("receiver: " + (fmt % args) + "\n")

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        st = self.server.state
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with st["lock"]:
            st["requests"] += 1
            if st["fail_first"] > 0:
                st["fail_first"] -= 1
                return self.answer(503, "failing on purpose (--fail-first)")
        if st["fail_while"] and os.path.exists(st["fail_while"]):
            return self.answer(503, "failing on purpose (--fail-while)")
        with open(st["secret_file"], encoding="utf-8") as f:
            secret = f.read().strip()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = Webhook(secret).verify(body, headers)
        except WebhookVerificationError as e:
            st["record"]({"rejected": f"v1: {e}", "webhook_id": headers.get("webhook-id")})
            return self.answer(400, f"v1 signature: {e}")
        kid = verify_v1a(
            st["keys"], headers["webhook-id"], headers["webhook-timestamp"], body, headers["webhook-signature"]
        )
        if kid is None:
            st["record"]({"rejected": "v1a: no vendor key signed this", "webhook_id": headers.get("webhook-id")})
            return self.answer(400, "v1a signature does not verify")
        msg_id = headers["webhook-id"]
        with st["lock"]:
            if msg_id in st["seen"]:
                st["record"]({"duplicate": msg_id})
            else:
                st["seen"].add(msg_id)
                st["record"]({"webhook_id": msg_id, "kid": kid, "event": event})
        return self.answer(200, "ok")


def make_tls(dirname):
    """A throwaway CA (DIR/ca.pem) and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM

    def cert(subject, issuer, public_key, signer, ca):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("settle test CA", "settle test CA", ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("127.0.0.1", "settle test CA", key.public_key(), ca_key, False)
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "server.pem"), "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(os.path.join(dirname, "server.key"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(os.path.join(dirname, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(dirname, "server.pem"), os.path.join(dirname, "server.key"))
    return ctx


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jwks", required=True, help="the vendor's JWKS (/.well-known/jwks.json)")
    ap.add_argument("--secret-file", required=True, help="file holding the subscription's whsec_ secret")
    ap.add_argument("--out", required=True, help="JSON Lines file of accepted events")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--fail-while", help="answer 503 while this file exists")
    ap.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N deliveries")
    ap.add_argument("--tls-dir", help="serve https; write a throwaway CA to DIR/ca.pem")
    args = ap.parse_args()

    out_lock = threading.Lock()

    def record(obj):
        with out_lock, open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, sort_keys=True) + "\n")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Receiver)
    if args.tls_dir:
        srv.socket = make_tls(args.tls_dir).wrap_socket(srv.socket, server_side=True)
    srv.state = {
        "keys": load_keys(args.jwks),
        "secret_file": args.secret_file,
        "fail_while": args.fail_while,
        "fail_first": args.fail_first,
        "requests": 0,
        "seen": set(),
        "lock": threading.Lock(),
        "record": record,
    }
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(str(srv.server_address[1]))
        os.replace(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
