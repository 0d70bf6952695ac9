#!/usr/bin/env python3
"""Verifies a settle receipt document with stock libraries only, independently of the
Rust crate: joserfc for the two JWS, hashlib for RFC 9162 Merkle hashing, and
cryptography for the Ed25519 signature of the C2SP signed-note checkpoint.

Usage: verify_receipt.py JWKS RECEIPT

JWKS is the vendor's key set (JSON), RECEIPT one receipt document (JSON object with
receipt, mandate, leaf, inclusion, checkpoint). Prints "ok" and exits 0 when everything
verifies; otherwise prints the reason on stderr and exits 1. Exits 2 when the tools
themselves are missing (joserfc is installed with pip if it cannot be imported).
"""

import base64
import hashlib
import json
import subprocess
import sys
import warnings

# settle signs with alg "EdDSA", which RFC 9864 deprecates in favour of "Ed25519" (same
# algorithm for Ed25519 keys); joserfc warns about it on every token.
warnings.filterwarnings("ignore", message="EdDSA is deprecated")

TYP_RECEIPT = "settle-receipt+jws"
VCT_RECEIPT = "settle.receipt.1"
MANDATE_TYPES = {
    # JWS typ -> (direction, vct)
    "settle-payment-mandate+jws": ("payment", "mandate.payment.1"),
    "settle-clawback-mandate+jws": ("clawback", "settle.mandate.clawback.1"),
}


class Invalid(Exception):
    """The receipt does not verify; the message says why."""


def import_tools():
    """joserfc and cryptography, installed with pip if missing; exit 2 if impossible."""
    try:
        import joserfc  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "joserfc"],
            stdout=sys.stderr,
        )
        if r.returncode != 0:
            print("error: joserfc is not installed and `pip install joserfc` failed",
                  file=sys.stderr)
            sys.exit(2)
    try:
        from joserfc import jws
        from joserfc.jwk import OKPKey
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.exceptions import InvalidSignature
    except ImportError as e:
        print(f"error: cannot import the verification tools: {e}", file=sys.stderr)
        sys.exit(2)
    return jws, OKPKey, Ed25519PublicKey, InvalidSignature


jws, OKPKey, Ed25519PublicKey, InvalidSignature = import_tools()


def b64url_decode(s):
    if not isinstance(s, str) or "=" in s:
        raise Invalid(f"not unpadded base64url: {s!r}")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64std_decode(s, what):
    try:
        return base64.b64decode(s, validate=True)
    except Exception as e:
        raise Invalid(f"{what} is not base64: {e}")


def valid_at(jwk, t):
    """The key's validity period (settle's valid_from / valid_until, Unix seconds)."""
    return ("valid_from" not in jwk or t >= jwk["valid_from"]) and (
        "valid_until" not in jwk or t < jwk["valid_until"])


def verify_jws(token, jwks, allowed_types, what):
    """Verifies a compact EdDSA JWS with joserfc; returns (typ, payload object)."""
    try:
        header = json.loads(b64url_decode(token.split(".")[0]))
    except Exception as e:
        raise Invalid(f"{what} JWS: malformed header: {e}")
    kid, typ = header.get("kid"), header.get("typ")
    if typ not in allowed_types:
        raise Invalid(f"{what} JWS: typ {typ!r} is not one of {sorted(allowed_types)}")
    jwk = jwks.get(kid)
    if jwk is None:
        raise Invalid(f"{what} JWS: no key {kid!r} in the JWKS")
    public = {k: jwk[k] for k in ("kty", "crv", "x", "kid")}
    try:
        key = OKPKey.import_key(public)
        obj = jws.deserialize_compact(token, key, algorithms=["EdDSA", "Ed25519"])
    except Exception as e:
        raise Invalid(f"{what} JWS: signature does not verify under key {kid}: "
                      f"{type(e).__name__} {e}")
    try:
        payload = json.loads(obj.payload)
    except Exception as e:
        raise Invalid(f"{what} JWS: payload is not JSON: {e}")
    if not isinstance(payload, dict):
        raise Invalid(f"{what} JWS: payload is not a JSON object")
    if not valid_at(jwk, payload.get("iat")):
        raise Invalid(f"{what} JWS: key {kid} was not valid at iat {payload.get('iat')}")
    return typ, payload


def root_from_inclusion(index, size, leaf_hash, path):
    """RFC 9162 section 2.1.3.2: the root an inclusion path leads to."""
    if index >= size:
        raise Invalid(f"inclusion proof: leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise Invalid("inclusion proof: too many hashes")
        if fn & 1 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if fn & 1 == 0:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("inclusion proof: too few hashes")
    return r


def key_hash(name, public):
    """C2SP signed-note key hash of an Ed25519 key."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


def verify_checkpoint(note, jwks):
    """C2SP signed note holding a tlog checkpoint; returns (origin, size, root, time)."""
    if not note.endswith("\n") or "\n\n" not in note:
        raise Invalid("checkpoint: not a signed note")
    text, sigs = note.split("\n\n", 1)
    body = text + "\n"  # the signature covers the body including its final newline
    lines = text.split("\n")
    if len(lines) < 3:
        raise Invalid("checkpoint: fewer than three body lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not size_s.isdigit() or (len(size_s) > 1 and size_s[0] == "0"):
        raise Invalid(f"checkpoint: size {size_s!r} is not a decimal number")
    root = b64std_decode(root_s, "checkpoint root")
    if len(root) != 32:
        raise Invalid("checkpoint: root is not 32 bytes")
    times = [l[len("time "):] for l in lines[3:] if l.startswith("time ")]
    if len(times) != 1 or not times[0].lstrip("-").isdigit():
        raise Invalid("checkpoint: no single 'time' line")
    time = int(times[0])
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Invalid(f"checkpoint: bad signature line {line!r}")
        name, _, b64 = line[2:].partition(" ")
        blob = b64std_decode(b64, "checkpoint signature")
        if name != origin or len(blob) != 68:
            continue
        for jwk in jwks.values():
            public = b64url_decode(jwk["x"])
            if key_hash(name, public) != blob[:4]:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], body.encode())
            except InvalidSignature:
                raise Invalid(f"checkpoint: signature by key {jwk['kid']} does not verify")
            if not valid_at(jwk, time):
                raise Invalid(f"checkpoint: key {jwk['kid']} was not valid at time {time}")
            return origin, int(size_s), root, time
    raise Invalid(f"checkpoint: no signature by a known key for origin {origin!r}")


def verify(jwks_doc, doc):
    jwks = {k["kid"]: k for k in jwks_doc["keys"]}
    for k in jwks.values():
        if k.get("kty") != "OKP" or k.get("crv") != "Ed25519":
            raise Invalid(f"JWKS: key {k.get('kid')} is not an Ed25519 key")
        # RFC 7638 thumbprint: the kid must name the key.
        canon = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": k["x"]},
                           separators=(",", ":"), sort_keys=True)
        if b64url_encode(hashlib.sha256(canon.encode()).digest()) != k["kid"]:
            raise Invalid(f"JWKS: kid {k['kid']} is not the RFC 7638 thumbprint of its key")

    _, receipt = verify_jws(doc["receipt"], jwks, {TYP_RECEIPT}, "receipt")
    if receipt.get("vct") != VCT_RECEIPT:
        raise Invalid(f"receipt: vct {receipt.get('vct')!r}")
    typ, mandate = verify_jws(doc["mandate"], jwks, set(MANDATE_TYPES), "mandate")
    direction, vct = MANDATE_TYPES[typ]
    if mandate.get("direction") != direction or mandate.get("vct") != vct:
        raise Invalid("mandate: direction or vct does not match its typ")

    reference = b64url_encode(hashlib.sha256(doc["mandate"].encode()).digest())
    if receipt.get("reference") != reference:
        raise Invalid("receipt: reference is not the SHA-256 of this mandate token")
    if receipt.get("payment_id") != mandate.get("transaction_id"):
        raise Invalid("receipt: payment_id is not this mandate's transaction_id")

    leaf = b64url_decode(doc["leaf"])
    try:
        event = json.loads(leaf)
    except Exception:
        raise Invalid("leaf: not JSON")
    data = event.get("data") if isinstance(event, dict) else None
    data = data if isinstance(data, dict) else {}
    kind = receipt.get("kind")
    if kind == "mandate_recorded":
        recorded = data.get("mandate") == doc["mandate"]
    elif kind in ("payment_settled", "payment_failed"):
        recorded = mandate.get("transaction_id") in (data.get("mandate_ids") or [])
    else:
        raise Invalid(f"receipt: unknown kind {kind!r}")
    if not recorded:
        raise Invalid("leaf: does not record this mandate")

    origin, size, cp_root, _ = verify_checkpoint(doc["checkpoint"], jwks)
    if size != receipt.get("tree_size") or cp_root.hex() != receipt.get("root"):
        raise Invalid(f"checkpoint: size {size} / root {cp_root.hex()} differ from the "
                      f"receipt's {receipt.get('tree_size')} / {receipt.get('root')}")

    path = [b64std_decode(h, "inclusion proof hash") for h in doc["inclusion"]]
    if any(len(h) != 32 for h in path):
        raise Invalid("inclusion proof: a hash is not 32 bytes")
    leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()  # RFC 9162 section 2.1.1
    root = root_from_inclusion(receipt["leaf_index"], size, leaf_hash, path)
    if root != cp_root:
        raise Invalid(f"inclusion proof: recomputed root {root.hex()} is not the "
                      f"checkpoint's {cp_root.hex()}")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            jwks_doc = json.load(f)
        with open(argv[2], encoding="utf-8") as f:
            doc = json.load(f)
        verify(jwks_doc, doc)
    except Invalid as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        print(f"invalid: malformed input: {type(e).__name__} {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
