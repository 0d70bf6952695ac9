#!/usr/bin/env node
// Verify settle receipts offline, with the vendor's public keys only.
//
//   node verify_receipt.mjs receipt JWKS RECEIPTS [--origin ORIGIN] [--partner ID]
//   node verify_receipt.mjs consistency JWKS OLD NEW PROOF [--origin ORIGIN]
//
// `receipt` checks every receipt in RECEIPTS (one receipt document as JSON, or JSON
// Lines such as a bundle's partners/<id>/receipts.jsonl): both JWS under the JWKS key
// named by `kid` with the expected `typ`, their payloads canonical (RFC 8785) with
// exactly the members of their type, reference = base64url(SHA-256(mandate token)), the
// leaf names the mandate, the signed checkpoint, the RFC 9162 inclusion path (and
// leaf_index < tree_size), and with --partner that the mandate pays (claws back from, or
// adjusts) that partner. It accepts and refuses the same receipts as `settle verify` and
// verify_receipt.py: every base64 text must be canonical, and a checkpoint note is
// parsed as strictly as settle parses it.
//
// A mandate is a payment, a clawback or an adjustment (a dispute's accepted correction),
// each with its own typ and vct. Payment and clawback amounts are never negative; an
// adjustment's is signed (positive pays the partner more, negative takes back) and never
// zero, and only an adjustment names its dispute (basis.dispute). An adjustment of a
// conversion missing on a lead has an empty basis.conversion and a pool of 0.
//
// `consistency` checks that the log of checkpoint OLD is a prefix of the log of NEW.
// OLD and NEW hold a signed note, the JSON of GET /v1/checkpoints/latest, or a receipt
// document; PROOF is the JSON of GET /v1/checkpoints/consistency?from=&to=.
//
// Prints one line per success; on the first failure prints the reason on stderr and
// exits 1 (2 on bad usage). Depends on `jose` and node:crypto only.

import { readFileSync } from 'node:fs';
import { createHash, createPublicKey, verify as ed25519Verify } from 'node:crypto';
import { calculateJwkThumbprint, compactVerify, decodeProtectedHeader, importJWK } from 'jose';

const TYP_RECEIPT = 'settle-receipt+jws';
const MANDATE_TYPES = {
  // JWS typ: [direction, vct]
  'settle-payment-mandate+jws': ['payment', 'mandate.payment.1'],
  'settle-clawback-mandate+jws': ['clawback', 'settle.mandate.clawback.1'],
  'settle-adjustment-mandate+jws': ['adjustment', 'settle.mandate.adjustment.1'],
};

class Invalid extends Error {}

// ---- encodings ----------------------------------------------------------------------

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

// Every base64 text is decoded strictly, as settle does: only the alphabet, in its one
// canonical form (the unused low bits of the last character zero, padding exactly as the
// encoding has it). Buffer.from is lenient: several texts would give one byte string.
function b64urlDecode(s, what) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s)) throw new Invalid(`${what}: not unpadded base64url`);
  const b = Buffer.from(s, 'base64url');
  if (b.toString('base64url') !== s) throw new Invalid(`${what}: not canonical base64url`);
  return b;
}

function b64Decode(s, what) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) {
    throw new Invalid(`${what}: not base64`);
  }
  const b = Buffer.from(s, 'base64');
  if (b.toString('base64') !== s) throw new Invalid(`${what}: not canonical base64`);
  return b;
}

// RFC 8785 text of a parsed JSON value (keys sorted by UTF-16 code units, numbers and
// strings as JSON.stringify writes them).
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

// ---- payload schemas (as settle's types: exact members, integer ranges) -------------

const MAX_SAFE = 2 ** 53 - 1;
const integer = (lo, hi) => (v) => Number.isInteger(v) && v >= lo && v <= hi;
const I64 = integer(-(2 ** 63), 2 ** 63 - 1);
const U32 = integer(0, 2 ** 32 - 1);
const SAFE_UINT = integer(0, MAX_SAFE);
const text = (v) => typeof v === 'string';
const oneOf = (...values) => (v) => values.includes(v);
// An object with exactly the `required` members (and any of `optional`), each passing its check.
const shape = (required, optional = {}) => (v) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const checks = { ...required, ...optional };
  const keys = Object.keys(v);
  return Object.keys(required).every((k) => keys.includes(k)) &&
    keys.every((k) => Object.hasOwn(checks, k) && checks[k](v[k]));
};
// Currency: settle also checks the code is an ISO 4217 currency with a minor unit.
const AMOUNT = shape({ amount: integer(-(10 ** 15), 10 ** 15), currency: (v) => typeof v === 'string' && /^[A-Z]{3}$/.test(v) });
const RECEIPT_SHAPE = shape(
  { iat: I64, iss: text, kind: oneOf('mandate_recorded', 'payment_settled', 'payment_failed'), leaf_index: SAFE_UINT,
    payment_id: text, reference: text, root: text, status: oneOf('Success', 'Error'), tree_size: SAFE_UINT, vct: text },
  { error: text, error_description: text, network_confirmation_id: text, psp_confirmation_id: text, rail: text },
);
const MANDATE_SHAPE = shape({
  basis: shape(
    { caused_by: text, conversion: text, hop: U32, hops: U32, log: shape({ event_hash: text, seq: SAFE_UINT }),
      open_mandate: text, pool: AMOUNT, program: text, role: text, rounding: text, rule_version: U32 },
    { dispute: text, reverses: text },
  ),
  direction: oneOf('payment', 'clawback', 'adjustment'), execution_date: I64, iat: I64, iss: text, payee: shape({ id: text }),
  payment_amount: AMOUNT, payment_instrument: shape({ id: text, type: text }), salt: text, transaction_id: text, vct: text,
});

// ---- keys ---------------------------------------------------------------------------

async function loadJwks(path) {
  const doc = JSON.parse(readFileSync(path, 'utf8'));
  const keys = new Map();
  for (const k of doc.keys ?? []) {
    if (k.kty !== 'OKP' || k.crv !== 'Ed25519') throw new Invalid(`JWKS: key ${k.kid} is not an OKP/Ed25519 key`);
    const kid = await calculateJwkThumbprint({ kty: k.kty, crv: k.crv, x: k.x }, 'sha256');
    if (kid !== k.kid) throw new Invalid(`JWKS: kid ${k.kid} is not the RFC 7638 thumbprint ${kid}`);
    if (keys.has(kid)) throw new Invalid(`JWKS: duplicate kid ${kid}`);
    keys.set(kid, k);
  }
  if (keys.size === 0) throw new Invalid('JWKS: no keys');
  return keys;
}

// settle's key validity period: valid_from <= t < valid_until (Unix seconds).
const validAt = (jwk, t) =>
  Number.isInteger(t) && (jwk.valid_from === undefined || t >= jwk.valid_from) &&
  (jwk.valid_until === undefined || jwk.valid_until === null || t < jwk.valid_until);

// ---- JWS ----------------------------------------------------------------------------

async function verifyJws(token, jwks, types, what) {
  if (typeof token !== 'string' || token.split('.').length !== 3) throw new Invalid(`${what}: not a compact JWS`);
  const [head, body, sig] = token.split('.');
  let header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b64urlDecode(head, `${what} header`)));
  } catch (e) {
    if (e instanceof Invalid) throw e;
    throw new Invalid(`${what}: header is not JSON`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header) ||
      Object.keys(header).sort().join() !== 'alg,kid,typ' || !Object.values(header).every((v) => typeof v === 'string')) {
    throw new Invalid(`${what}: header must have exactly alg, kid and typ`);
  }
  if (!types.includes(header.typ)) throw new Invalid(`${what}: typ is ${header.typ}, expected ${types.join(' or ')}`);
  if (header.alg !== 'EdDSA' && header.alg !== 'Ed25519') throw new Invalid(`${what}: alg ${header.alg} is not EdDSA`);
  const jwk = jwks.get(header.kid);
  if (!jwk) throw new Invalid(`${what}: no key ${header.kid} in the JWKS`);
  b64urlDecode(body, `${what} payload`);
  if (b64urlDecode(sig, `${what} signature`).length !== 64) throw new Invalid(`${what}: signature is not 64 bytes`);
  const key = await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, header.alg);
  let verified;
  try {
    verified = await compactVerify(token, key, { algorithms: ['EdDSA', 'Ed25519'] });
  } catch (e) {
    throw new Invalid(`${what}: signature does not verify under key ${header.kid} (${e.code ?? e.name})`);
  }
  let payload;
  let payloadText;
  try {
    payloadText = new TextDecoder('utf-8', { fatal: true }).decode(verified.payload);
    payload = JSON.parse(payloadText);
  } catch {
    throw new Invalid(`${what}: payload is not JSON`);
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new Invalid(`${what}: payload is not a JSON object`);
  }
  if (canonical(payload) !== payloadText) throw new Invalid(`${what}: payload is not canonical JSON (RFC 8785)`);
  if (!validAt(jwk, payload.iat)) throw new Invalid(`${what}: key ${header.kid} was not valid at iat ${payload.iat}`);
  return { typ: header.typ, payload };
}

// ---- checkpoints (C2SP signed note) -------------------------------------------------

// Signed-note key hash: SHA-256(name || "\n" || 0x01 || public key)[:4].
const keyHash = (name, publicKey) => sha256(Buffer.from(name, 'utf8'), Buffer.from([0x0a, 0x01]), publicKey).subarray(0, 4);

function verifyCheckpoint(note, jwks, origin) {
  if (typeof note !== 'string' || Buffer.byteLength(note, 'utf8') > 16 * 1024) {
    throw new Invalid('checkpoint: not a signed note (or longer than 16 KiB)');
  }
  if (!note.endsWith('\n') || !note.includes('\n\n')) throw new Invalid('checkpoint: not a signed note');
  const cut = note.indexOf('\n\n');
  const text = note.slice(0, cut);
  const signatures = note.slice(cut + 2, -1);
  const body = Buffer.from(text + '\n', 'utf8'); // the signature covers the body and its last newline
  const lines = text.split('\n');
  if (lines.length !== 4 || !lines[3].startsWith('time ') || lines[0] === '') {
    throw new Invalid('checkpoint: body is not origin, size, root, time');
  }
  const [name, sizeS, rootS] = lines;
  const timeS = lines[3].slice(5);
  if (!/^(0|[1-9][0-9]*)$/.test(sizeS) || BigInt(sizeS) > 2n ** 64n - 1n) {
    throw new Invalid(`checkpoint: size ${sizeS} is not a decimal number`);
  }
  if (!/^-?(0|[1-9][0-9]*)$/.test(timeS) || timeS === '-0' || BigInt(timeS) < -(2n ** 63n) || BigInt(timeS) >= 2n ** 63n) {
    throw new Invalid(`checkpoint: time ${timeS} is not a number`);
  }
  const root = b64Decode(rootS, 'checkpoint root');
  if (root.length !== 32) throw new Invalid('checkpoint: root is not 32 bytes');
  if (origin !== undefined && name !== origin) throw new Invalid(`checkpoint: origin is ${name}, expected ${origin}`);
  const size = Number(sizeS);
  const time = Number(timeS);
  // Every signature line is well formed, ours or not; then ours is checked.
  const signed = [];
  for (const line of signatures.split('\n')) {
    const rest = line.slice(2);
    const sp = rest.indexOf(' ');
    if (!line.startsWith('\u2014 ') || sp < 0) throw new Invalid(`checkpoint: bad signature line ${JSON.stringify(line)}`);
    const signer = rest.slice(0, sp);
    const blob = b64Decode(rest.slice(sp + 1), 'checkpoint signature');
    if (signer === name && blob.length === 68) signed.push(blob); // others: another witness or algorithm
  }
  for (const blob of signed) {
    for (const jwk of jwks.values()) {
      const publicKey = b64urlDecode(jwk.x, 'JWKS x');
      if (!keyHash(name, publicKey).equals(blob.subarray(0, 4))) continue;
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
      if (!ed25519Verify(null, body, key, blob.subarray(4))) {
        throw new Invalid(`checkpoint: signature by key ${jwk.kid} does not verify`);
      }
      if (!validAt(jwk, time)) throw new Invalid(`checkpoint: key ${jwk.kid} was not valid at time ${time}`);
      return { origin: name, size, root, time };
    }
  }
  throw new Invalid(`checkpoint: no signature by a JWKS key for origin ${name}`);
}

// ---- RFC 9162 Merkle tree (sizes as BigInt: trees may exceed 2^53 leaves) -----------

const leafHash = (data) => sha256(Buffer.from([0x00]), data);
const nodeHash = (l, r) => sha256(Buffer.from([0x01]), l, r);

// RFC 9162 section 2.1.3.2: the root an inclusion path leads to. Its first step refuses
// a leaf at or past the tree size: the loop alone would let a one-leaf tree's leaf stand
// at index 1.
function rootFromInclusion(index, size, leaf, path) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn > sn) throw new Invalid(`inclusion proof: leaf ${index} is not in a tree of size ${size}`);
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) throw new Invalid('inclusion proof: too many hashes');
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Invalid('inclusion proof: too few hashes');
  return r;
}

// RFC 9162 section 2.1.4.2: the tree of `oldSize` leaves is a prefix of `newSize`.
function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  const m = BigInt(oldSize);
  const n = BigInt(newSize);
  if (m > n) throw new Invalid(`consistency: old size ${oldSize} is above new size ${newSize}`);
  if (m === n) {
    if (proof.length !== 0 || !oldRoot.equals(newRoot)) throw new Invalid('consistency: same size, but roots or proof differ');
    return;
  }
  if (m === 0n) {
    if (proof.length !== 0) throw new Invalid('consistency: a proof from the empty tree must be empty');
    if (!oldRoot.equals(sha256())) throw new Invalid("consistency: the empty tree's root must be SHA-256 of nothing");
    return;
  }
  if (proof.length === 0) throw new Invalid('consistency: empty proof');
  const path = (m & (m - 1n)) === 0n ? [oldRoot, ...proof] : [...proof];
  let fn = m - 1n;
  let sn = n - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new Invalid('consistency: too many hashes');
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Invalid('consistency: too few hashes');
  if (!fr.equals(oldRoot)) throw new Invalid('consistency: the proof does not lead to the old root');
  if (!sr.equals(newRoot)) throw new Invalid('consistency: the proof does not lead to the new root');
}

// ---- receipts -----------------------------------------------------------------------

const DOCUMENT_MEMBERS = ['receipt', 'mandate', 'leaf', 'inclusion', 'checkpoint'];

async function verifyReceipt(doc, jwks, origin, partner) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Invalid('not a receipt document (a JSON object)');
  for (const f of DOCUMENT_MEMBERS) {
    if (!Object.hasOwn(doc, f)) throw new Invalid(`receipt document has no "${f}"`);
  }
  const extra = Object.keys(doc).filter((k) => !DOCUMENT_MEMBERS.includes(k));
  if (extra.length > 0) throw new Invalid(`receipt document has unknown members ${extra.join(', ')}`);
  if (!['receipt', 'mandate', 'leaf', 'checkpoint'].every((f) => typeof doc[f] === 'string') ||
      !Array.isArray(doc.inclusion) || !doc.inclusion.every((h) => typeof h === 'string')) {
    throw new Invalid('receipt document: receipt, mandate, leaf and checkpoint are strings, inclusion a list of strings');
  }

  // 1. Both signatures, by kid, with the right typ; payloads of the right shape.
  const { payload: receipt } = await verifyJws(doc.receipt, jwks, [TYP_RECEIPT], 'receipt');
  if (receipt.vct !== 'settle.receipt.1') throw new Invalid(`receipt: vct is ${receipt.vct}`);
  if (!RECEIPT_SHAPE(receipt)) throw new Invalid('receipt: payload is not a valid receipt (members or their types)');
  const { typ, payload: mandate } = await verifyJws(doc.mandate, jwks, Object.keys(MANDATE_TYPES), 'mandate');
  const [direction, vct] = MANDATE_TYPES[typ];
  if (mandate.direction !== direction || mandate.vct !== vct) throw new Invalid(`mandate: direction/vct do not match typ ${typ}`);
  if (!MANDATE_SHAPE(mandate)) throw new Invalid('mandate: payload is not a valid mandate (members or their types)');
  const { basis } = mandate;
  const adjustment = direction === 'adjustment';
  const disputed = Object.hasOwn(basis, 'dispute');
  if (adjustment && (mandate.payment_amount.amount === 0 || !disputed)) {
    throw new Invalid('mandate: an adjustment moves money and names its dispute');
  }
  if ((!adjustment && mandate.payment_amount.amount < 0) || basis.pool.amount < 0) {
    throw new Invalid('mandate: amounts of a payment or clawback mandate are never negative');
  }
  if (!adjustment && disputed) throw new Invalid('mandate: only an adjustment names a dispute');
  if (mandate.payment_amount.currency !== basis.pool.currency) throw new Invalid('mandate: payment and pool currencies differ');
  if (basis.hop >= basis.hops) throw new Invalid('mandate: hop or log position out of range');
  if (partner !== undefined && mandate.payee.id !== partner) {
    throw new Invalid(`mandate: payee is '${mandate.payee.id}', not '${partner}'`);
  }

  // 2. The receipt answers this mandate token.
  if (receipt.reference !== sha256(Buffer.from(doc.mandate, 'ascii')).toString('base64url')) {
    throw new Invalid('receipt: reference is not base64url(SHA-256(mandate token))');
  }
  if (receipt.payment_id !== mandate.transaction_id) throw new Invalid("receipt: payment_id is not the mandate's transaction_id");

  // 3. The leaf records this outcome.
  const leaf = b64urlDecode(doc.leaf, 'leaf');
  let event;
  try {
    event = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(leaf));
  } catch {
    throw new Invalid('leaf: not JSON');
  }
  const data = event && typeof event.data === 'object' && event.data !== null ? event.data : {};
  let named;
  if (receipt.kind === 'mandate_recorded') named = data.mandate === doc.mandate;
  else if (receipt.kind === 'payment_settled' || receipt.kind === 'payment_failed') {
    const want = receipt.kind === 'payment_settled' ? 'mandate_paid' : 'mandate_payment_failed';
    named = event !== null && typeof event === 'object' && event.type === want && data.mandate_id === mandate.transaction_id;
  } else throw new Invalid(`receipt: unknown kind ${receipt.kind}`);
  if (!named) throw new Invalid('leaf: the log event does not name this mandate');

  // 4. The checkpoint, and that the receipt is bound to it.
  const cp = verifyCheckpoint(doc.checkpoint, jwks, origin);
  if (cp.size !== receipt.tree_size || cp.root.toString('hex') !== receipt.root) {
    throw new Invalid(`checkpoint: size ${cp.size} root ${cp.root.toString('hex')} differ from the receipt's ${receipt.tree_size} ${receipt.root}`);
  }

  // 5. The leaf is in that tree.
  const path = doc.inclusion.map((h) => b64Decode(h, 'inclusion proof hash'));
  if (path.some((h) => h.length !== 32)) throw new Invalid('inclusion proof: a hash is not 32 bytes');
  if (path.length > 64) throw new Invalid('inclusion proof: more than 64 hashes');
  const got = rootFromInclusion(receipt.leaf_index, cp.size, leafHash(leaf), path);
  if (!got.equals(cp.root)) {
    throw new Invalid(`inclusion proof: leads to root ${got.toString('hex')}, checkpoint root is ${cp.root.toString('hex')}`);
  }
  return { receipt, mandate };
}

function readDocuments(path) {
  const text = readFileSync(path, 'utf8');
  try {
    return [[1, JSON.parse(text)]];
  } catch {
    // JSON Lines
  }
  const out = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push([i + 1, JSON.parse(line)]);
    } catch (e) {
      throw new Invalid(`line ${i + 1}: not JSON (${e.message})`);
    }
  });
  return out;
}

function readNote(path) {
  const text = readFileSync(path, 'utf8');
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    return text;
  }
  if (typeof obj?.note === 'string') return obj.note;
  if (typeof obj?.checkpoint === 'string') return obj.checkpoint;
  throw new Invalid(`${path}: no signed note in it`);
}

async function cmdReceipt([jwksPath, receiptsPath], { origin, partner }) {
  const jwks = await loadJwks(jwksPath);
  const docs = readDocuments(receiptsPath);
  if (docs.length === 0) throw new Invalid(`${receiptsPath}: no receipts`);
  for (const [n, doc] of docs) {
    let r;
    try {
      r = await verifyReceipt(doc, jwks, origin, partner);
    } catch (e) {
      if (e instanceof Invalid) throw new Invalid(`${receiptsPath}:${n}: ${e.message}`);
      throw e;
    }
    const { receipt, mandate } = r;
    const a = mandate.payment_amount;
    console.log(`ok ${receiptsPath}:${n}: ${receipt.kind} ${mandate.transaction_id} ${mandate.direction} ` +
      `${a.amount} ${a.currency} minor units to ${mandate.payee.id}, leaf ${receipt.leaf_index} of ${receipt.tree_size}`);
  }
}

async function cmdConsistency([jwksPath, oldPath, newPath, proofPath], { origin }) {
  const jwks = await loadJwks(jwksPath);
  const older = verifyCheckpoint(readNote(oldPath), jwks, origin);
  const newer = verifyCheckpoint(readNote(newPath), jwks, origin);
  const proof = JSON.parse(readFileSync(proofPath, 'utf8'));
  if (proof.from !== older.size || proof.to !== newer.size) {
    throw new Invalid(`consistency: proof is from ${proof.from} to ${proof.to}, checkpoints are ${older.size} and ${newer.size}`);
  }
  const hashes = (proof.proof ?? []).map((h) => b64Decode(h, 'consistency proof hash'));
  if (hashes.some((h) => h.length !== 32)) throw new Invalid('consistency: a proof hash is not 32 bytes');
  verifyConsistency(older.size, newer.size, older.root, newer.root, hashes);
  console.log(`ok: the log of size ${older.size} is a prefix of the log of size ${newer.size}`);
}

function usage() {
  console.error('usage: node verify_receipt.mjs receipt JWKS RECEIPTS [--origin ORIGIN] [--partner ID]\n' +
    '       node verify_receipt.mjs consistency JWKS OLD NEW PROOF [--origin ORIGIN]');
  process.exit(2);
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  const positional = [];
  const opts = {};
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--origin' || rest[i] === '--partner') {
      if (i + 1 >= rest.length) usage();
      opts[rest[i].slice(2)] = rest[++i];
    } else positional.push(rest[i]);
  }
  const commands = { receipt: [cmdReceipt, 2], consistency: [cmdConsistency, 4] };
  if (!(cmd in commands) || positional.length !== commands[cmd][1]) usage();
  try {
    await commands[cmd][0](positional, opts);
  } catch (e) {
    if (e instanceof Invalid) console.error(`invalid: ${e.message}`);
    else console.error(`invalid: malformed input: ${e.name}: ${e.message}`);
    process.exit(1);
  }
}

await main(process.argv.slice(2));
