#!/usr/bin/env python3
"""Verify settle receipts offline, with the vendor's public keys only.

    verify_receipt.py receipt JWKS RECEIPTS [--origin ORIGIN] [--partner ID]
    verify_receipt.py consistency JWKS OLD NEW PROOF [--origin ORIGIN]

`receipt` checks every receipt in RECEIPTS (one receipt document as JSON, or JSON Lines
such as a bundle's partners/<id>/receipts.jsonl):

  1. the receipt JWS and the mandate JWS verify under the JWKS key named by `kid`, with
     the expected `typ`, and that key was valid at the object's `iat`; each payload is
     in RFC 8785 canonical form and has exactly the members of its type;
  2. receipt.reference = base64url(SHA-256(mandate token)), payment_id = transaction_id;
  3. the leaf (the log event) names the mandate;
  4. the checkpoint is signed by a JWKS key (C2SP signed note) valid at its `time`;
  5. the inclusion path leads from the leaf to the checkpoint's root (RFC 9162), and
     leaf_index < tree_size;
  6. with --partner, the mandate pays (claws back from, or adjusts) that partner.

A mandate is a payment, a clawback or an adjustment (a dispute's accepted correction),
each with its own typ and vct. Payment and clawback amounts are never negative; an
adjustment's is signed (positive pays the partner more, negative takes back) and never
zero, and only an adjustment names its dispute (basis.dispute). An adjustment of a
conversion missing on a lead has an empty basis.conversion and a pool of 0.

It accepts and refuses the same receipts as `settle verify` (and verify_receipt.mjs):
every base64 text must be canonical, the receipt document has exactly its five members,
and a checkpoint note is parsed as strictly as settle parses it.

`consistency` checks that the log of checkpoint OLD is a prefix of the log of checkpoint
NEW. OLD and NEW are files holding a signed note, the JSON of GET /v1/checkpoints/latest,
or a receipt document (its checkpoint is used); PROOF is the JSON of
GET /v1/checkpoints/consistency?from=<old size>&to=<new size>.

Prints one line per success. On the first failure prints the reason on stderr and exits
1; exits 2 on bad usage or missing dependencies (pip install joserfc cryptography).
"""

import argparse
import base64
import hashlib
import json
import re
import sys
import warnings

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from joserfc import jws
    from joserfc.jwk import OKPKey
except ImportError as e:
    print(f"error: {e}; install the dependencies with: pip install joserfc cryptography", file=sys.stderr)
    sys.exit(2)

# settle signs with alg "EdDSA"; RFC 9864 prefers the name "Ed25519" for the same
# algorithm, and joserfc warns about the old name. Both are accepted below.
warnings.filterwarnings("ignore", message=".*EdDSA.*deprecated.*")

TYP_RECEIPT = "settle-receipt+jws"
MANDATE_TYPES = {
    # JWS typ: (direction, vct)
    "settle-payment-mandate+jws": ("payment", "mandate.payment.1"),
    "settle-clawback-mandate+jws": ("clawback", "settle.mandate.clawback.1"),
    "settle-adjustment-mandate+jws": ("adjustment", "settle.mandate.adjustment.1"),
}


class Invalid(Exception):
    """Verification failed; the message says what."""


# ---- encodings -----------------------------------------------------------------------

# Every base64 text is decoded strictly, as settle does: only the alphabet, and in its one
# canonical form (the unused low bits of the last character zero, padding exactly as the
# encoding has it). A lenient decoder maps several texts to one byte string, so an edited
# receipt would pass here and fail in `settle verify`.

def b64url_decode(s, what):
    if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise Invalid(f"{what}: not unpadded base64url")
    try:
        b = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except ValueError as e:
        raise Invalid(f"{what}: not base64url ({e})")
    if b64url_encode(b) != s:
        raise Invalid(f"{what}: not canonical base64url")
    return b


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64_decode(s, what):
    if not isinstance(s, str):
        raise Invalid(f"{what}: not base64")
    try:
        b = base64.b64decode(s, validate=True)
    except (ValueError, TypeError) as e:
        raise Invalid(f"{what}: not base64 ({e})")
    if base64.b64encode(b).decode("ascii") != s:
        raise Invalid(f"{what}: not canonical base64")
    return b


def canonical(value):
    """RFC 8785 bytes of a value holding no floats (settle's objects hold none)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ---- payload schemas (as settle's types: exact members, integer ranges) --------------

MAX_SAFE = 2**53 - 1
I64 = (-(2**63), 2**63 - 1)
U32 = (0, 2**32 - 1)
U64 = (0, 2**64 - 1)


def integer(lo, hi):
    return lambda v: type(v) is int and lo <= v <= hi


def text(v):
    return isinstance(v, str)


def one_of(*values):
    return lambda v: isinstance(v, str) and v in values


def shape(required, optional=None):
    """An object with exactly the `required` members (and any of `optional`), each
    passing its check."""
    optional = optional or {}

    def check(v):
        if not isinstance(v, dict) or not set(required) <= set(v) <= set(required) | set(optional):
            return False
        checks = {**required, **optional}
        return all(checks[k](x) for k, x in v.items())
    return check


# Currency: settle also checks the code is an ISO 4217 currency with a minor unit.
AMOUNT = shape({"amount": lambda v: type(v) is int and abs(v) <= 10**15,
                "currency": lambda v: isinstance(v, str) and re.fullmatch(r"[A-Z]{3}", v) is not None})
RECEIPT_SHAPE = shape(
    {"iat": integer(*I64), "iss": text, "kind": one_of("mandate_recorded", "payment_settled", "payment_failed"),
     "leaf_index": integer(0, MAX_SAFE), "payment_id": text, "reference": text, "root": text,
     "status": one_of("Success", "Error"), "tree_size": integer(0, MAX_SAFE), "vct": text},
    {"error": text, "error_description": text, "network_confirmation_id": text, "psp_confirmation_id": text,
     "rail": text})
MANDATE_SHAPE = shape(
    {"basis": shape({"caused_by": text, "conversion": text, "hop": integer(*U32), "hops": integer(*U32),
                     "log": shape({"event_hash": text, "seq": integer(0, MAX_SAFE)}), "open_mandate": text,
                     "pool": AMOUNT, "program": text, "role": text, "rounding": text,
                     "rule_version": integer(*U32)},
                    {"dispute": text, "reverses": text}),
     "direction": one_of("payment", "clawback", "adjustment"), "execution_date": integer(*I64), "iat": integer(*I64),
     "iss": text, "payee": shape({"id": text}), "payment_amount": AMOUNT,
     "payment_instrument": shape({"id": text, "type": text}), "salt": text, "transaction_id": text,
     "vct": text})


# ---- keys ----------------------------------------------------------------------------

def load_jwks(path):
    """The JWKS as {kid: jwk}; every kid must be its key's RFC 7638 thumbprint."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    keys = {}
    for k in doc.get("keys", []):
        if k.get("kty") != "OKP" or k.get("crv") != "Ed25519":
            raise Invalid(f"JWKS: key {k.get('kid')!r} is not an OKP/Ed25519 key")
        thumb_input = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": k["x"]},
                                 separators=(",", ":"), sort_keys=True)
        kid = b64url_encode(hashlib.sha256(thumb_input.encode()).digest())
        if kid != k.get("kid"):
            raise Invalid(f"JWKS: kid {k.get('kid')!r} is not the RFC 7638 thumbprint {kid}")
        if kid in keys:
            raise Invalid(f"JWKS: duplicate kid {kid}")
        keys[kid] = k
    if not keys:
        raise Invalid("JWKS: no keys")
    return keys


def valid_at(jwk, t):
    """settle's key validity period: valid_from <= t < valid_until (Unix seconds)."""
    if type(t) is not int:
        return False
    return jwk.get("valid_from", t) <= t and (jwk.get("valid_until") is None or t < jwk["valid_until"])


# ---- JWS -----------------------------------------------------------------------------

def verify_jws(token, jwks, types, what):
    """Verifies a compact EdDSA JWS whose typ is in `types`; returns (typ, payload)."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise Invalid(f"{what}: not a compact JWS")
    head, body, sig = token.split(".")
    try:
        header = json.loads(b64url_decode(head, f"{what} header"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid(f"{what}: header is not JSON")
    if not isinstance(header, dict) or set(header) != {"alg", "kid", "typ"} or \
            not all(isinstance(v, str) for v in header.values()):
        raise Invalid(f"{what}: header must have exactly alg, kid and typ")
    typ, kid = header.get("typ"), header.get("kid")
    if typ not in types:
        raise Invalid(f"{what}: typ is {typ!r}, expected {' or '.join(sorted(types))}")
    if header.get("alg") not in ("EdDSA", "Ed25519"):
        raise Invalid(f"{what}: alg {header.get('alg')!r} is not EdDSA")
    jwk = jwks.get(kid)
    if jwk is None:
        raise Invalid(f"{what}: no key {kid!r} in the JWKS")
    b64url_decode(body, f"{what} payload")
    if len(b64url_decode(sig, f"{what} signature")) != 64:
        raise Invalid(f"{what}: signature is not 64 bytes")
    key = OKPKey.import_key({k: jwk[k] for k in ("kty", "crv", "x")})
    try:
        obj = jws.deserialize_compact(token, key, algorithms=["EdDSA", "Ed25519"])
    except Exception as e:  # joserfc raises BadSignatureError and friends
        raise Invalid(f"{what}: signature does not verify under key {kid} ({type(e).__name__})")
    try:
        payload = json.loads(obj.payload.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid(f"{what}: payload is not JSON")
    if not isinstance(payload, dict):
        raise Invalid(f"{what}: payload is not a JSON object")
    if canonical(payload) != obj.payload:
        raise Invalid(f"{what}: payload is not canonical JSON (RFC 8785)")
    if not valid_at(jwk, payload.get("iat")):
        raise Invalid(f"{what}: key {kid} was not valid at iat {payload.get('iat')}")
    return typ, payload


# ---- checkpoints (C2SP signed note) --------------------------------------------------

def key_hash(name, public_key):
    """Signed-note key hash: SHA-256(name || "\\n" || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def verify_checkpoint(note, jwks, origin=None):
    """Returns (origin, size, root bytes, time) of a signed checkpoint."""
    if not isinstance(note, str) or len(note.encode("utf-8")) > 16 * 1024:
        raise Invalid("checkpoint: not a signed note (or longer than 16 KiB)")
    if not note.endswith("\n") or "\n\n" not in note:
        raise Invalid("checkpoint: not a signed note")
    text, signatures = note.split("\n\n", 1)
    body = (text + "\n").encode()  # the signature covers the body and its last newline
    lines = text.split("\n")
    if len(lines) != 4 or not lines[3].startswith("time ") or not lines[0]:
        raise Invalid("checkpoint: body is not origin, size, root, time")
    name, size_s, root_s, time_s = lines[0], lines[1], lines[2], lines[3][5:]
    if not re.fullmatch(r"0|[1-9][0-9]*", size_s) or int(size_s) > U64[1]:
        raise Invalid(f"checkpoint: size {size_s!r} is not a decimal number")
    root = b64_decode(root_s, "checkpoint root")
    if len(root) != 32:
        raise Invalid("checkpoint: root is not 32 bytes")
    if not re.fullmatch(r"-?(0|[1-9][0-9]*)", time_s) or time_s == "-0" or not I64[0] <= int(time_s) <= I64[1]:
        raise Invalid(f"checkpoint: time {time_s!r} is not a number")
    time = int(time_s)
    if origin is not None and name != origin:
        raise Invalid(f"checkpoint: origin is {name!r}, expected {origin!r}")
    # Every signature line is well formed, ours or not; then ours is checked.
    signed = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 ") or " " not in line[2:]:
            raise Invalid(f"checkpoint: bad signature line {line!r}")
        signer, _, sig_b64 = line[2:].partition(" ")
        blob = b64_decode(sig_b64, "checkpoint signature")
        if signer == name and len(blob) == 68:
            signed.append(blob)  # others: another witness or another algorithm
    for blob in signed:
        for jwk in jwks.values():
            public = b64url_decode(jwk["x"], "JWKS x")
            if key_hash(name, public) != blob[:4]:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], body)
            except InvalidSignature:
                raise Invalid(f"checkpoint: signature by key {jwk['kid']} does not verify")
            if not valid_at(jwk, time):
                raise Invalid(f"checkpoint: key {jwk['kid']} was not valid at time {time}")
            return name, int(size_s), root, time
    raise Invalid(f"checkpoint: no signature by a JWKS key for origin {name!r}")


# ---- RFC 9162 Merkle tree ------------------------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index, size, leaf, path):
    """RFC 9162 section 2.1.3.2: the root an inclusion path leads to. Its first step
    refuses a leaf at or past the tree size: the loop alone would let a one-leaf tree's
    leaf stand at index 1."""
    if index >= size:
        raise Invalid(f"inclusion proof: leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise Invalid("inclusion proof: too many hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("inclusion proof: too few hashes")
    return r


def verify_consistency(old_size, new_size, old_root, new_root, proof):
    """RFC 9162 section 2.1.4.2: the tree of old_size leaves is a prefix of new_size."""
    if old_size > new_size:
        raise Invalid(f"consistency: old size {old_size} is above new size {new_size}")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise Invalid("consistency: same size, but roots or proof differ")
        return
    if old_size == 0:
        if proof:
            raise Invalid("consistency: a proof from the empty tree must be empty")
        if old_root != hashlib.sha256(b"").digest():
            raise Invalid("consistency: the empty tree's root must be SHA-256 of nothing")
        return
    if not proof:
        raise Invalid("consistency: empty proof")
    path = ([old_root] if old_size & (old_size - 1) == 0 else []) + list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Invalid("consistency: too many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("consistency: too few hashes")
    if fr != old_root:
        raise Invalid("consistency: the proof does not lead to the old root")
    if sr != new_root:
        raise Invalid("consistency: the proof does not lead to the new root")


# ---- receipts ------------------------------------------------------------------------

DOCUMENT_MEMBERS = ("receipt", "mandate", "leaf", "inclusion", "checkpoint")


def verify_receipt(doc, jwks, origin=None, partner=None):
    """Verifies one receipt document; returns (receipt payload, mandate payload)."""
    if not isinstance(doc, dict):
        raise Invalid("not a receipt document (a JSON object)")
    for field in DOCUMENT_MEMBERS:
        if field not in doc:
            raise Invalid(f"receipt document has no {field!r}")
    if set(doc) != set(DOCUMENT_MEMBERS):
        raise Invalid(f"receipt document has unknown members {sorted(set(doc) - set(DOCUMENT_MEMBERS))}")
    if not all(isinstance(doc[f], str) for f in ("receipt", "mandate", "leaf", "checkpoint")) or \
            not isinstance(doc["inclusion"], list) or not all(isinstance(h, str) for h in doc["inclusion"]):
        raise Invalid("receipt document: receipt, mandate, leaf and checkpoint are strings, inclusion a list of strings")

    # 1. Both signatures, by kid, with the right typ; payloads of the right shape.
    _, receipt = verify_jws(doc["receipt"], jwks, {TYP_RECEIPT}, "receipt")
    if receipt.get("vct") != "settle.receipt.1":
        raise Invalid(f"receipt: vct is {receipt.get('vct')!r}")
    if not RECEIPT_SHAPE(receipt):
        raise Invalid("receipt: payload is not a valid receipt (members or their types)")
    typ, mandate = verify_jws(doc["mandate"], jwks, set(MANDATE_TYPES), "mandate")
    direction, vct = MANDATE_TYPES[typ]
    if mandate.get("direction") != direction or mandate.get("vct") != vct:
        raise Invalid(f"mandate: direction/vct do not match typ {typ}")
    if not MANDATE_SHAPE(mandate):
        raise Invalid("mandate: payload is not a valid mandate (members or their types)")
    basis, amount = mandate["basis"], mandate["payment_amount"]
    adjustment = direction == "adjustment"
    if adjustment and (amount["amount"] == 0 or "dispute" not in basis):
        raise Invalid("mandate: an adjustment moves money and names its dispute")
    if (not adjustment and amount["amount"] < 0) or basis["pool"]["amount"] < 0:
        raise Invalid("mandate: amounts of a payment or clawback mandate are never negative")
    if not adjustment and "dispute" in basis:
        raise Invalid("mandate: only an adjustment names a dispute")
    if amount["currency"] != basis["pool"]["currency"]:
        raise Invalid("mandate: payment and pool currencies differ")
    if basis["hop"] >= basis["hops"]:
        raise Invalid("mandate: hop or log position out of range")
    if partner is not None and mandate["payee"]["id"] != partner:
        raise Invalid(f"mandate: payee is {mandate['payee']['id']!r}, not {partner!r}")

    # 2. The receipt answers this mandate token.
    reference = b64url_encode(hashlib.sha256(doc["mandate"].encode("ascii")).digest())
    if receipt.get("reference") != reference:
        raise Invalid("receipt: reference is not base64url(SHA-256(mandate token))")
    if receipt.get("payment_id") != mandate.get("transaction_id"):
        raise Invalid("receipt: payment_id is not the mandate's transaction_id")

    # 3. The leaf records this outcome.
    leaf = b64url_decode(doc["leaf"], "leaf")
    try:
        event = json.loads(leaf.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("leaf: not JSON")
    data = event.get("data") if isinstance(event, dict) else None
    data = data if isinstance(data, dict) else {}
    kind = receipt.get("kind")
    if kind == "mandate_recorded":
        named = data.get("mandate") == doc["mandate"]
    elif kind in ("payment_settled", "payment_failed"):
        want = "mandate_paid" if kind == "payment_settled" else "mandate_payment_failed"
        kind_of = event.get("type") if isinstance(event, dict) else None
        named = kind_of == want and data.get("mandate_id") == mandate.get("transaction_id")
    else:
        raise Invalid(f"receipt: unknown kind {kind!r}")
    if not named:
        raise Invalid("leaf: the log event does not name this mandate")

    # 4. The checkpoint, and that the receipt is bound to it.
    _, size, root, _ = verify_checkpoint(doc["checkpoint"], jwks, origin)
    if size != receipt.get("tree_size") or root.hex() != receipt.get("root"):
        raise Invalid(f"checkpoint: size {size} root {root.hex()} differ from the receipt's "
                      f"{receipt.get('tree_size')} {receipt.get('root')}")

    # 5. The leaf is in that tree.
    path = [b64_decode(h, "inclusion proof hash") for h in doc["inclusion"]]
    if any(len(h) != 32 for h in path):
        raise Invalid("inclusion proof: a hash is not 32 bytes")
    if len(path) > 64:
        raise Invalid("inclusion proof: more than 64 hashes")
    got = root_from_inclusion(receipt["leaf_index"], size, leaf_hash(leaf), path)
    if got != root:
        raise Invalid(f"inclusion proof: leads to root {got.hex()}, checkpoint root is {root.hex()}")
    return receipt, mandate


def read_documents(path):
    """One JSON document, or JSON Lines: yields (line number, document)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        yield 1, json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise Invalid(f"line {n}: not JSON ({e})")


def read_note(path):
    """A signed note from a file: the note itself, {"note": ...} or a receipt document."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(obj, dict) and isinstance(obj.get("note"), str):
        return obj["note"]
    if isinstance(obj, dict) and isinstance(obj.get("checkpoint"), str):
        return obj["checkpoint"]
    raise Invalid(f"{path}: no signed note in it")


def cmd_receipt(args):
    jwks = load_jwks(args.jwks)
    count = 0
    for n, doc in read_documents(args.receipts):
        try:
            receipt, mandate = verify_receipt(doc, jwks, args.origin, args.partner)
        except Invalid as e:
            raise Invalid(f"{args.receipts}:{n}: {e}")
        amount = mandate["payment_amount"]
        print(f"ok {args.receipts}:{n}: {receipt['kind']} {mandate['transaction_id']} "
              f"{mandate['direction']} {amount['amount']} {amount['currency']} minor units "
              f"to {mandate['payee']['id']}, leaf {receipt['leaf_index']} of {receipt['tree_size']}")
        count += 1
    if count == 0:
        raise Invalid(f"{args.receipts}: no receipts")


def cmd_consistency(args):
    jwks = load_jwks(args.jwks)
    _, old_size, old_root, _ = verify_checkpoint(read_note(args.old), jwks, args.origin)
    _, new_size, new_root, _ = verify_checkpoint(read_note(args.new), jwks, args.origin)
    with open(args.proof, encoding="utf-8") as f:
        proof = json.load(f)
    if proof.get("from") != old_size or proof.get("to") != new_size:
        raise Invalid(f"consistency: proof is from {proof.get('from')} to {proof.get('to')}, "
                      f"checkpoints are {old_size} and {new_size}")
    hashes = [b64_decode(h, "consistency proof hash") for h in proof.get("proof", [])]
    if any(len(h) != 32 for h in hashes):
        raise Invalid("consistency: a proof hash is not 32 bytes")
    verify_consistency(old_size, new_size, old_root, new_root, hashes)
    print(f"ok: the log of size {old_size} is a prefix of the log of size {new_size}")


def main():
    ap = argparse.ArgumentParser(description="Verify settle receipts and checkpoints offline.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receipt", help="verify receipt documents")
    r.add_argument("jwks")
    r.add_argument("receipts")
    r.add_argument("--origin", help="expected checkpoint origin (log identity)")
    r.add_argument("--partner", help="expected payee id of every mandate")
    r.set_defaults(run=cmd_receipt)
    c = sub.add_parser("consistency", help="verify that an older checkpoint is a prefix of a newer one")
    c.add_argument("jwks")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("proof")
    c.add_argument("--origin", help="expected checkpoint origin (log identity)")
    c.set_defaults(run=cmd_consistency)
    args = ap.parse_args()
    try:
        args.run(args)
    except Invalid as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError, TypeError, ValueError) as e:
        print(f"invalid: malformed input: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
