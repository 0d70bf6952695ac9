//! Signing decisions (in parallel, order-preserving) and replaying a log to check that
//! every derived event is exactly what the engine derives from the facts.

use rayon::prelude::*;
use settle_mandates::jws;
use settle_mandates::keys::{KeyRing, SigningKey};
use settle_mandates::types::{
    Mandate, OpenMandate, Signed, TYP_ADJUSTMENT_MANDATE, TYP_CLAWBACK_MANDATE, TYP_OPEN_MANDATE, TYP_PAYMENT_MANDATE,
};

use crate::decide::Engine;
use crate::decision::{Decision, Output, Rejection, ToSign};
use crate::model::{Envelope, Event};

/// Signature-verification batch size in a replay.
pub const VERIFY_BATCH: usize = 4096;

/// A record ready for the ledger: type, version, canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Event type.
    pub kind: &'static str,
    /// Event version.
    pub version: u32,
    /// Canonical bytes.
    pub bytes: Vec<u8>,
    /// The envelope.
    pub envelope: Envelope,
}

/// The signed token of a mandate event (payment, clawback, adjustment or open mandate).
fn token_mut(env: &mut Envelope) -> &mut String {
    match &mut env.event {
        Event::MandateIssued { mandate, .. }
        | Event::ClawbackIssued { mandate, .. }
        | Event::AdjustmentIssued { mandate, .. }
        | Event::OpenMandateIssued { mandate, .. } => mandate,
        _ => unreachable!("only mandate events are signed"),
    }
}

fn fill(env: &mut Envelope, token: String) {
    *token_mut(env) = token;
}

/// The compact JWS a signed derived record carries (`data.mandate`), read without
/// parsing the rest of the record.
fn signature_token(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        mandate: std::borrow::Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        data: Data<'a>,
    }
    serde_json::from_slice::<Record<'_>>(bytes).ok().map(|r| r.data.mandate.into_owned())
}

fn token_of(env: &Envelope) -> Option<&str> {
    match &env.event {
        Event::MandateIssued { mandate, .. }
        | Event::ClawbackIssued { mandate, .. }
        | Event::AdjustmentIssued { mandate, .. }
        | Event::OpenMandateIssued { mandate, .. } => Some(mandate),
        _ => None,
    }
}

/// The record of `envelope`, with its canonical bytes if they were already made.
fn ready(envelope: Envelope, bytes: Option<Vec<u8>>) -> Ready {
    let bytes = bytes.unwrap_or_else(|| envelope.to_bytes());
    Ready { kind: envelope.event.kind(), version: envelope.v, bytes, envelope }
}

/// The canonical bytes of a signed event `env`, still without its token, once `token` is
/// in it: the bytes made without the token (short), with the token spliced in where its
/// empty string is. A compact JWS is base64url segments and dots, which JSON never
/// escapes, and a member's value does not change the order of members, so these are the
/// bytes [`Envelope::to_bytes`] makes of the filled event, without escaping and checking
/// the token's thousand-odd bytes once more. `None` (make them the long way) when the
/// token holds a byte JSON escapes (a quote, a backslash, a control character) or the
/// empty token is not found exactly once.
fn with_token(env: &Envelope, token: &str) -> Option<Vec<u8>> {
    const EMPTY: &[u8] = br#""mandate":"""#;
    // Every byte looked at (no early exit), which the compiler makes a vector loop.
    let escaped = token.bytes().fold(false, |any, c| any | (c < 0x20) | (c == b'"') | (c == b'\\'));
    if !token_of(env).is_some_and(str::is_empty) || escaped {
        return None;
    }
    let without = env.to_bytes();
    let mut found = memchr::memmem::find_iter(&without, EMPTY);
    let (Some(at), None) = (found.next(), found.next()) else { return None };
    let at = at + EMPTY.len() - 1;
    let mut out = Vec::with_capacity(without.len() + token.len());
    out.extend_from_slice(&without[..at]);
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(&without[at..]);
    Some(out)
}

/// Fewer signatures than this are made on the caller's thread: handing a few to the pool
/// costs more than they take.
const SIGN_ALONE: usize = 8;

/// Signs every decision's mandates on all cores (the bytes signed are fixed before
/// signing, and Ed25519 is deterministic, so order and threads do not change a byte),
/// returning each decision's records: the fact first, then its derived events. Each
/// signature is a task of its own, so even one conversion's three mandates are signed at
/// once; then each decision's records are made.
#[must_use]
pub fn sign_decisions(decisions: Vec<Decision>, key: &SigningKey) -> Vec<Vec<Ready>> {
    let sign = |t: &ToSign| match t {
        ToSign::Mandate(m) => m.sign(key),
        ToSign::Open(m) => m.sign(key),
    };
    let to_sign: Vec<&ToSign> =
        decisions.iter().flat_map(|d| d.outputs.iter().filter_map(|o| o.sign.as_ref())).collect();
    let tokens: Vec<String> = if to_sign.len() < SIGN_ALONE {
        to_sign.into_iter().map(sign).collect()
    } else {
        to_sign.into_par_iter().map(sign).collect()
    };
    // Hand each decision the tokens of its own signed outputs, in order.
    let mut tokens = tokens.into_iter();
    let jobs: Vec<(Decision, Vec<String>)> = decisions
        .into_iter()
        .map(|d| {
            let n = d.outputs.iter().filter(|o| o.sign.is_some()).count();
            let mine = tokens.by_ref().take(n).collect();
            (d, mine)
        })
        .collect();
    let records = |(d, tokens): (Decision, Vec<String>)| {
        let mut tokens = tokens.into_iter();
        let mut out = Vec::with_capacity(1 + d.outputs.len());
        out.push(ready(d.fact, d.fact_bytes));
        for o in d.outputs {
            let mut env = o.envelope;
            let mut bytes = None;
            if o.sign.is_some() {
                let token = tokens.next().expect("a signature for every signed output");
                bytes = with_token(&env, &token);
                fill(&mut env, token);
            }
            out.push(ready(env, bytes));
        }
        out
    };
    if jobs.len() < 2 {
        return jobs.into_iter().map(records).collect();
    }
    jobs.into_par_iter().map(records).collect()
}

/// The first disagreement a replay found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at seq {seq}: {what}")]
pub struct Mismatch {
    /// Sequence.
    pub seq: u64,
    /// What, expected vs found.
    pub what: String,
}

/// Replays a log record by record: re-decides every fact, checks each derived event
/// against what the engine derives (signed objects by payload and by signature, checked
/// in parallel batches), so any edit of a split, mandate or outcome is found.
pub struct Replay {
    engine: Engine,
    ring: KeyRing,
    /// When true, salts are compared too (the replayer holds the salt secret).
    with_secret: bool,
    expected: std::collections::VecDeque<(Output, u64)>,
    pending_sigs: Vec<Pending>,
    verifying: Option<std::thread::JoinHandle<Result<(), Mismatch>>>,
    /// Mandates checked.
    pub mandates: u64,
    /// Records checked.
    pub records: u64,
}

impl Replay {
    /// A replay from an empty state.
    #[must_use]
    pub fn new(engine: Engine, ring: KeyRing, with_secret: bool) -> Self {
        Self {
            engine,
            ring,
            with_secret,
            expected: Default::default(),
            pending_sigs: Vec::new(),
            verifying: None,
            mandates: 0,
            records: 0,
        }
    }

    /// The engine as replayed so far.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Feeds the record at `seq` with canonical bytes `bytes`. On a failure, the checks
    /// still pending for earlier records run first, so the failure reported is the first
    /// in log order.
    pub fn feed(&mut self, seq: u64, kind: &str, version: u32, bytes: &[u8]) -> Result<(), Mismatch> {
        let env = match parse_record(seq, kind, version, bytes) {
            Ok(env) => env,
            Err(m) => return Err(self.earliest(m)),
        };
        self.feed_parsed(seq, env)
    }

    /// [`Replay::feed`] of a record already parsed and checked by [`parse_record`] (which
    /// a caller may run on another thread, ahead of the replay).
    pub fn feed_parsed(&mut self, seq: u64, env: Envelope) -> Result<(), Mismatch> {
        match self.feed_inner(seq, env) {
            Ok(()) => Ok(()),
            Err(m) => Err(self.earliest(m)),
        }
    }

    /// [`Replay::feed`] of a derived record (not a fact) that has not been parsed: when
    /// its bytes are exactly the canonical bytes of what the replay derives (with the
    /// signature taken from the record), it is accepted without parsing it; anything else
    /// is parsed and checked as [`Replay::feed`] does, which says what differs.
    pub fn feed_derived_bytes(&mut self, seq: u64, kind: &str, version: u32, bytes: &[u8]) -> Result<(), Mismatch> {
        match self.feed_exact(seq, kind, version, bytes) {
            Some(r) => r,
            None => self.feed(seq, kind, version, bytes),
        }
    }

    /// Accepts the next derived record if its bytes are exactly what the replay derives;
    /// `None` (and nothing changed) if they are not.
    fn feed_exact(&mut self, seq: u64, kind: &str, version: u32, bytes: &[u8]) -> Option<Result<(), Mismatch>> {
        let (mut o, cause) = self.expected.pop_front()?;
        let same = o.envelope.event.kind() == kind
            && o.envelope.v == version
            && match &o.sign {
                Some(_) => signature_token(bytes).map(|t| fill(&mut o.envelope, t)).is_some(),
                None => true,
            }
            && o.envelope.to_bytes() == bytes;
        if !same {
            // Put it back for the full check (which fills in the record's token itself).
            self.expected.push_front((o, cause));
            return None;
        }
        self.records += 1;
        let Some(sign) = o.sign else { return Some(Ok(())) };
        // The token filled in above moves to its pending check.
        let token = std::mem::take(token_mut(&mut o.envelope));
        Some(self.queue_signature(seq, o.envelope.event.kind(), token, sign).map_err(|m| self.earliest(m)))
    }

    /// Queues a signed derived event's payload and signature checks, which run in
    /// parallel batches (see [`Replay::flush`]).
    fn queue_signature(&mut self, seq: u64, kind: &'static str, token: String, sign: ToSign) -> Result<(), Mismatch> {
        let typ = match &sign {
            ToSign::Mandate(m) => m.typ(),
            ToSign::Open(_) => TYP_OPEN_MANDATE,
        };
        self.mandates += 1;
        self.pending_sigs.push(Pending { seq, kind, typ, token, want: sign });
        if self.pending_sigs.len() >= VERIFY_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// `m`, or an earlier failure among the checks still pending: what to report when
    /// the caller found `m` (e.g. from [`parse_record`]).
    pub fn earliest(&mut self, m: Mismatch) -> Mismatch {
        self.drain().err().filter(|e| e.seq < m.seq).unwrap_or(m)
    }

    /// Runs every check still pending: the batch in the background, then the rest.
    fn drain(&mut self) -> Result<(), Mismatch> {
        self.flush()?;
        self.flush()
    }

    fn feed_inner(&mut self, seq: u64, env: Envelope) -> Result<(), Mismatch> {
        let bad = |what: String| Mismatch { seq, what };
        let kind = env.event.kind();
        self.records += 1;
        if env.event.is_fact() {
            if let Some((o, _)) = self.expected.front() {
                return Err(bad(format!("expected derived event {} here, found fact {kind}", o.envelope.event.kind())));
            }
            let d = self
                .engine
                .decide(env, seq)
                .map_err(|e: Rejection| bad(format!("recorded fact is rejected on replay: {e}")))?;
            self.expected.extend(d.outputs.into_iter().map(|o| (o, seq)));
            return Ok(());
        }
        let Some((o, _cause)) = self.expected.pop_front() else {
            return Err(bad(format!("derived event {kind} that no fact caused")));
        };
        let mut want = o.envelope;
        let Some(sign) = o.sign else {
            // `env` is canonical (checked above): structural equality is byte equality.
            if want != env {
                return Err(bad(format!(
                    "derived {kind} differs from the replay: expected {}",
                    String::from_utf8_lossy(&want.to_bytes())
                )));
            }
            return Ok(());
        };
        let token = token_of(&env)
            .ok_or_else(|| bad(format!("expected a signed {} here, found {kind}", want.event.kind())))?
            .to_owned();
        fill(&mut want, token.clone());
        if want != env {
            return Err(bad(format!(
                "derived {kind} differs from the replay: expected {}",
                String::from_utf8_lossy(&want.to_bytes())
            )));
        }
        self.queue_signature(seq, want.event.kind(), token, sign)
    }

    /// Verifies the signatures collected so far: batch verification on all cores, in the
    /// background while the replay goes on; the previous batch is joined first.
    pub fn flush(&mut self) -> Result<(), Mismatch> {
        if let Some(h) = self.verifying.take() {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?;
        }
        let sigs = std::mem::take(&mut self.pending_sigs);
        if sigs.is_empty() {
            return Ok(());
        }
        let ring = self.ring.clone();
        let with_secret = self.with_secret;
        self.verifying = Some(std::thread::spawn(move || verify_sigs(&sigs, &ring, with_secret)));
        Ok(())
    }

    /// Ends the replay: every derived event present, every signature verified.
    pub fn finish(mut self) -> Result<Engine, Mismatch> {
        self.drain()?;
        if let Some((o, cause)) = self.expected.front() {
            return Err(Mismatch {
                seq: *cause,
                what: format!("derived event {} is missing at the end of the log", o.envelope.event.kind()),
            });
        }
        Ok(self.engine)
    }
}

fn mismatch<T: serde::Serialize>(want: &T, got: &T) -> String {
    format!(
        "expected {}, found {}",
        serde_json::to_string(want).unwrap_or_default(),
        serde_json::to_string(got).unwrap_or_default()
    )
}

/// Parses a record's event and checks it is canonical and of the type and version the
/// record says: the part of a replay that needs no state.
pub fn parse_record(seq: u64, kind: &str, version: u32, bytes: &[u8]) -> Result<Envelope, Mismatch> {
    let bad = |what: String| Mismatch { seq, what };
    let env = Envelope::from_bytes(bytes).map_err(|e| bad(format!("event does not parse: {e}")))?;
    if env.to_bytes() != bytes {
        return Err(bad("event is not in canonical form".into()));
    }
    if env.event.kind() != kind || env.v != version {
        return Err(bad(format!("record says {kind} v{version}, event is {} v{}", env.event.kind(), env.v)));
    }
    Ok(env)
}

/// A signed derived event whose payload and signature are still to be checked.
struct Pending {
    seq: u64,
    kind: &'static str,
    typ: &'static str,
    token: String,
    want: ToSign,
}

/// The signed payload of `token` is canonical and is what the replay derived (but for
/// the salt when the replayer lacks the salt secret); returns its `iat`.
fn check_payload<T: Signed + PartialEq + std::fmt::Debug + Clone>(
    token: &str,
    typ: &str,
    want: &T,
    with_secret: bool,
    salt_of: impl Fn(&mut T) -> &mut String,
) -> Result<i64, String> {
    let p = jws::parse(token, typ).map_err(|e| e.to_string())?;
    // Holding the salt secret, the replay knows every byte the payload must have: one
    // serialisation and a comparison, no parse. Otherwise (or to say what differs) the
    // payload is parsed and compared field by field.
    if with_secret && settle_mandates::jcs::to_vec(want).is_ok_and(|w| w == p.payload) {
        return Ok(want.iat());
    }
    let mut got: T = serde_json::from_slice(&p.payload).map_err(|e| e.to_string())?;
    if settle_mandates::jcs::to_vec(&got).map_err(|e| e.to_string())? != p.payload {
        return Err("payload is not canonical".into());
    }
    if !with_secret {
        // Without the vendor's salt secret the salt cannot be re-derived: compare the rest.
        let mut w = want.clone();
        *salt_of(&mut w) = salt_of(&mut got).clone();
        return if got == w { Ok(got.iat()) } else { Err(mismatch(&w, &got)) };
    }
    if &got != want {
        return Err(mismatch(want, &got));
    }
    Ok(got.iat())
}

/// Checks a chunk: every payload against the replay, then the signatures by batch
/// verification, and that each key was valid at the payload's `iat`. The first failure
/// in log order.
fn verify_chunk(chunk: &[Pending], ring: &KeyRing, with_secret: bool) -> Result<(), Mismatch> {
    let mut iats = Vec::with_capacity(chunk.len());
    for p in chunk {
        let iat = match &p.want {
            ToSign::Mandate(m) => check_payload::<Mandate>(&p.token, p.typ, m, with_secret, |x| &mut x.salt),
            ToSign::Open(m) => check_payload::<OpenMandate>(&p.token, p.typ, m, with_secret, |x| &mut x.salt),
        }
        .map_err(|w| Mismatch { seq: p.seq, what: format!("signed {} differs from the replay: {w}", p.kind) })?;
        iats.push(iat);
    }
    for typ in [TYP_PAYMENT_MANDATE, TYP_CLAWBACK_MANDATE, TYP_ADJUSTMENT_MANDATE, TYP_OPEN_MANDATE] {
        let idx: Vec<usize> = (0..chunk.len()).filter(|&i| chunk[i].typ == typ).collect();
        if idx.is_empty() {
            continue;
        }
        let toks: Vec<&str> = idx.iter().map(|&i| chunk[i].token.as_str()).collect();
        let verified = jws::verify_batch(&toks, ring, typ)
            .map_err(|(i, e)| Mismatch { seq: chunk[idx[i]].seq, what: format!("signature: {e}") })?;
        for (k, v) in verified.iter().enumerate() {
            let (seq, iat) = (chunk[idx[k]].seq, iats[idx[k]]);
            if !v.key.valid_at(iat) {
                return Err(Mismatch { seq, what: format!("key {} was not valid at iat {iat}", v.key.kid) });
            }
        }
    }
    Ok(())
}

/// Checks every pending signed event on all cores; the first failure in log order.
fn verify_sigs(sigs: &[Pending], ring: &KeyRing, with_secret: bool) -> Result<(), Mismatch> {
    let results: Vec<Result<(), Mismatch>> =
        sigs.par_chunks(256).map(|chunk| verify_chunk(chunk, ring, with_secret)).collect();
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;
    use settle_mandates::money::{Amount, Currency};

    fn issued(token: &str) -> Envelope {
        Envelope {
            v: 1,
            at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            by: "engine".into(),
            key: None,
            cause: Some(7),
            event: Event::MandateIssued {
                mandate_id: "md_7_0".into(),
                partner: "p1".into(),
                amount: Amount::from_minor(1234, "USD".parse::<Currency>().unwrap()).unwrap(),
                mandate: token.into(),
            },
        }
    }

    #[test]
    fn a_token_is_spliced_only_where_it_needs_no_escaping() {
        let token = "eyJh.eyJi-_0.c2ln";
        assert_eq!(with_token(&issued(""), token), Some(issued(token).to_bytes()));
        // A byte JSON escapes, or an event already holding a token: the long way.
        for bad in ["a\"b.c.d", "a\\b.c.d", "a\nb.c.d", "a.b.c\u{1f}"] {
            assert_eq!(with_token(&issued(""), bad), None, "{bad:?}");
        }
        // Any other byte needs no escaping: spliced, the same bytes.
        let odd = "é €.~/+=\u{7f}.x";
        assert_eq!(with_token(&issued(""), odd), Some(issued(odd).to_bytes()));
        assert_eq!(with_token(&issued("x.y.z"), token), None);
    }
}
