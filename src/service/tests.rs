//! The sequencer's tests.
use std::path::Path;

use super::*;

fn publish(key: &str, name: &str) -> Submit {
    publish_at(key, name, Utc::now())
}

fn publish_at(key: &str, name: &str, at: DateTime<Utc>) -> Submit {
    publish_program(key, "growth", name, at)
}

fn publish_program(key: &str, program: &str, name: &str, at: DateTime<Utc>) -> Submit {
    let spec = serde_json::json!({
        "program": program, "name": name, "currency": "USD", "holding_days": 0,
        "attribution_window_days": 120, "pool_rounding": "half_even", "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "40", "remaining": "closer"},
        "valid_from": "2025-01-01T00:00:00Z"
    });
    let event = Event::ProgramPublished { spec: serde_json::from_value(spec).unwrap() };
    Submit { key: key.into(), by: "admin".into(), at, event, request: None }
}

fn new_store(dir: &Path) -> Arc<Service> {
    std::fs::create_dir_all(dir).unwrap();
    KeyFile::new("ven_test", "settle.test/log", [1; 32], [2; 32], 0).save(dir).unwrap();
    Service::open(&Home::Dir(dir.to_path_buf())).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    /// A deal of this revenue (cents).
    Convert(i64),
    /// A refund of this percentage of an earlier deal.
    Refund(usize, u8),
    /// An earlier accepted submission again (same key, same content), later.
    Retry(usize),
    /// An earlier accepted submission's key, with other content.
    Reuse(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (1i64..10_000_000).prop_map(Op::Convert),
        1 => (any::<usize>(), 1u8..=100).prop_map(|(i, p)| Op::Refund(i, p)),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Reuse),
    ]
}

fn submit_one(svc: &Service, s: Submit) -> Result<Outcome, SubmitError> {
    svc.submit_blocking(vec![s]).remove(0)
}

fn records(svc: &Service) -> Vec<Vec<u8>> {
    svc.ledger().records(0).map(|r| r.unwrap().event).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Law: a fact submitted again with the same client key changes nothing. Random
    /// deals and refunds; some submitted again later (the original outcome comes
    /// back, marked replayed), some keys reused for other content (a conflict).
    /// The log and the engine state end byte for byte as those of a service that got
    /// each accepted submission once.
    #[test]
    fn the_same_client_key_twice_changes_nothing(ops in proptest::collection::vec(op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let (svc, once) = (new_store(&dir.path().join("a")), new_store(&dir.path().join("b")));
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let at = |n: usize| t0 + chrono::Duration::seconds(i64::try_from(n).unwrap());
        let fact = |key: String, n: usize, event: Event| Submit { key, by: "admin".into(), at: at(n), event, request: None };
        let mut setup = vec![publish_at("pub", "Growth", at(0))];
        for (i, p) in ["p1", "p2"].iter().enumerate() {
            let event = Event::PartnerEnrolled { partner: (*p).into(), program: "growth".into(), name: format!("P {p}"), role: settle_engine::model::PartnerRole::Partner };
            setup.push(fact(format!("enrol-{p}"), i + 1, event));
        }
        setup.push(fact("lead".into(), 3, Event::LeadRegistered { lead: "l1".into(), program: "growth".into(), customer: "acme.example".into(), customer_key: Some(settle_engine::model::CustomerKey::CURRENT), partner: "p1".into() }));
        setup.push(fact("handoff".into(), 4, Event::LeadHandedOff { lead: "l1".into(), from: "p1".into(), to: "p2".into() }));
        // Accepted submissions, in order, with their outcomes.
        let mut accepted: Vec<(Submit, u64)> = Vec::new();
        for s in setup {
            let o = submit_one(&svc, s.clone()).unwrap();
            accepted.push((s, o.seq));
        }
        let usd = |c: i64| settle_mandates::money::Amount::from_minor(c, "USD".parse().unwrap()).unwrap();
        let mut deals: Vec<(String, i64)> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let n = n + 10;
            match op {
                Op::Convert(rev) => {
                    let event = Event::ConversionRecorded { conversion: format!("d{n}"), lead: "l1".into(), revenue: usd(*rev), occurred_at: at(n), subscription_month: None, fx: None };
                    let s = fact(format!("k{n}"), n, event);
                    let o = submit_one(&svc, s.clone()).unwrap();
                    deals.push((format!("d{n}"), *rev));
                    accepted.push((s, o.seq));
                }
                Op::Refund(i, pct) if !deals.is_empty() => {
                    let (id, rev) = &deals[i % deals.len()];
                    let size = settle_engine::model::RefundSize::Amount(usd((rev * i64::from(*pct) / 100).max(1)));
                    let s = fact(format!("k{n}"), n, Event::RefundRecorded { refund: format!("r{n}"), conversion: id.clone(), size });
                    if let Ok(o) = submit_one(&svc, s.clone()) {
                        accepted.push((s, o.seq));
                    }
                }
                Op::Retry(i) => {
                    let (s, seq) = accepted[i % accepted.len()].clone();
                    let size = svc.ledger().size();
                    let o = submit_one(&svc, Submit { at: at(n), ..s }).unwrap();
                    proptest::prop_assert!(o.replayed && o.seq == seq, "retry answered {:?} for {}", (o.replayed, o.seq), seq);
                    proptest::prop_assert_eq!(svc.ledger().size(), size);
                }
                Op::Reuse(i) => {
                    let (s, _) = accepted[i % accepted.len()].clone();
                    let size = svc.ledger().size();
                    let other = Event::HoldsAdvanced { to: at(n) };
                    let r = submit_one(&svc, Submit { event: other, at: at(n), ..s });
                    proptest::prop_assert!(matches!(r, Err(SubmitError::KeyConflict(_))), "{:?}", r.map(|o| o.seq));
                    proptest::prop_assert_eq!(svc.ledger().size(), size);
                }
                Op::Refund(..) => {}
            }
        }
        for (s, seq) in &accepted {
            let o = submit_one(&once, s.clone()).unwrap();
            proptest::prop_assert_eq!((o.seq, o.replayed), (*seq, false));
        }
        proptest::prop_assert_eq!(records(&svc), records(&once));
        let state = |x: &Service| x.with_state(|st| serde_json::to_vec(st).unwrap());
        proptest::prop_assert_eq!(state(&svc), state(&once));
    }
}

/// A full ledger queue refuses a submission with `Busy` before anything is decided:
/// the engine does not move, the refused fact can be sent again later, and what was
/// queued is all acknowledged once the log syncs again.
#[test]
fn a_full_queue_answers_busy_and_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = new_store(&dir.path().join("s"));
    let enrol = Event::PartnerEnrolled {
        partner: "p1".into(),
        program: "growth".into(),
        name: "P1".into(),
        role: settle_engine::model::PartnerRole::Partner,
    };
    for s in [
        publish("pub", "Growth"),
        Submit { key: "enrol".into(), by: "admin".into(), at: Utc::now(), event: enrol, request: None },
    ] {
        submit_one(&svc, s).unwrap();
    }
    let lead = |i: usize| Submit {
        key: format!("lead-{i}"),
        by: "admin".into(),
        at: Utc::now(),
        event: Event::LeadRegistered {
            lead: format!("l{i}"),
            program: "growth".into(),
            customer: format!("c{i}.example"),
            customer_key: Some(settle_engine::model::CustomerKey::CURRENT),
            partner: "p1".into(),
        },
        request: None,
    };
    let hold = svc.ledger().hold_next_sync();
    let mut pending = Vec::new();
    let mut busy = None;
    for i in 0..4 * settle_ledger::MAX_BATCH_RECORDS + settle_ledger::QUEUE_CAPACITY {
        let p = svc.prepare(vec![lead(i)], WhenFull::Refuse);
        if matches!(p[..], [Prepared::Done(Err(SubmitError::Busy))]) {
            busy = Some(i);
            break;
        }
        assert!(matches!(p[..], [Prepared::Pending { .. }]), "lead {i} was not queued");
        pending.push(p);
    }
    let busy = busy.expect("the queue never filled while the sync was held");
    let decided = svc.with_state(|st| st.leads.len());
    assert_eq!(decided, busy, "the refused lead was not decided");
    hold.release(false);
    for p in pending {
        futures_lite_block_on(svc.complete(p)).remove(0).unwrap();
    }
    let o = submit_one(&svc, lead(busy)).unwrap();
    assert!(!o.replayed);
    assert_eq!(svc.ledger().size(), o.seq + 2, "the lead and its outcome, last");
}

/// A key that names another submission's records, with other content, is a conflict
/// only once those records are durable: until then the answer waits, and when their
/// sync fails both submissions get the storage error, not a conflict over a key
/// that was never used.
#[test]
fn a_conflict_waits_for_the_records_it_conflicts_with() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    std::fs::create_dir_all(&data).unwrap();
    KeyFile::new("ven_test", "settle.test/log", [1; 32], [2; 32], 0).save(&data).unwrap();
    let svc = Service::open(&Home::Dir(data.clone())).unwrap();
    let hold = svc.ledger().hold_next_sync();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let in_flight = || svc.seq.lock().unwrap().inflight.contains_key("k");
    let submit = |s: Submit| {
        let svc = Arc::clone(&svc);
        rt.spawn(async move { svc.try_submit(vec![s]).await.remove(0) })
    };
    let first = submit(publish("k", "Growth"));
    for _ in 0..10_000 {
        if in_flight() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(in_flight(), "the first submission never went in flight");
    let second = submit(publish("k", "Other name"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!second.is_finished(), "answered before the first submission's records were durable");
    hold.release(true);
    let (first, second) = rt.block_on(async { (first.await.unwrap(), second.await.unwrap()) });
    assert!(matches!(first, Err(SubmitError::Storage(_))), "{first:?}");
    assert!(matches!(second, Err(SubmitError::Storage(_))), "{second:?}");
}

/// When the engine state is stored with an append: once the log has grown by
/// `PROJECTION_MIN_RECORDS` or doubled, and never once it would be over
/// `PROJECTION_MAX_BYTES` (judged from the last one stored, scaled by the growth).
#[test]
fn the_state_is_stored_when_due_and_only_while_it_is_small() {
    let engine = || Engine::new(EngineConfig { vendor: "v".into(), salt_secret: [0; 32] });
    let seq = |next, saved, saved_bytes| Sequencer {
        engine: engine(),
        next,
        inflight: HashMap::new(),
        turns: 0,
        saved,
        saved_bytes,
    };
    let mut s = seq(PROJECTION_MIN_RECORDS - 1, 0, 0);
    assert!(s.state_to_store().is_none(), "not yet grown enough");
    s.next = PROJECTION_MIN_RECORDS;
    let stored = s.state_to_store().expect("due");
    assert_eq!((s.saved, s.saved_bytes), (PROJECTION_MIN_RECORDS, stored.len()));
    s.next = 2 * PROJECTION_MIN_RECORDS - 1;
    assert!(s.state_to_store().is_none(), "the log has not doubled since");
    // Due, but the last state, scaled by the growth, would be over the limit.
    let mut big = seq(2 * PROJECTION_MIN_RECORDS, PROJECTION_MIN_RECORDS, PROJECTION_MAX_BYTES / 2 + 1);
    assert!(big.state_to_store().is_none());
    assert_eq!(big.saved, PROJECTION_MIN_RECORDS, "nothing was stored");
    big.saved_bytes = PROJECTION_MAX_BYTES / 2;
    assert!(big.state_to_store().is_some(), "at the limit it is stored");
}

/// The doors' calls are combined: many concurrent calls (signed together, on all cores),
/// some sent twice at once and one retried later, are each answered with their own
/// records and in the log once, every fact followed by what it caused, each signature on
/// its own record.
#[test]
fn concurrent_door_calls_are_combined_and_each_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = new_store(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let calls = 64;
    // One call of sixteen facts first: one group of many decisions, signed on all cores.
    let batch: Vec<Submit> =
        (0..16).map(|i| publish_program(&format!("b{i}"), &format!("batch-{i}"), "B", Utc::now())).collect();
    let batched = rt.block_on(svc.try_submit(batch));
    assert!(batched.iter().all(|r| r.as_ref().is_ok_and(|o| !o.replayed)), "{batched:?}");
    let in_flight = || svc.seq.lock().unwrap().inflight.len();
    assert_eq!(in_flight(), 0, "an answered call's keys are still in flight");
    let answers: Vec<Result<Outcome, SubmitError>> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..calls {
            // Every eighth call's key is sent twice at once, with the same content.
            let key = format!("k{}", if i % 8 == 7 { i - 1 } else { i });
            let svc = svc.clone();
            let at = Utc::now();
            let program = format!("growth-{key}");
            set.spawn(async move { (i, svc.try_submit(vec![publish_program(&key, &program, "P", at)]).await) });
        }
        let mut out: Vec<(usize, Result<Outcome, SubmitError>)> = Vec::new();
        while let Some(r) = set.join_next().await {
            let (i, mut v) = r.unwrap();
            out.push((i, v.remove(0)));
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    });
    assert_eq!(in_flight(), 0, "answered calls' keys are still in flight");
    // Every call is recorded (a twin replays its record).
    let recorded: Vec<&Outcome> = answers.iter().map(|r| r.as_ref().expect("every call is recorded")).collect();
    assert_eq!(recorded.len(), calls);
    // Of each pair sent at once, one is recorded and the other answered with its record.
    assert_eq!(recorded.iter().filter(|o| o.replayed).count(), calls / 8, "one of each pair replays the other");
    let firsts: std::collections::BTreeSet<u64> = recorded.iter().filter(|o| !o.replayed).map(|o| o.seq).collect();
    assert_eq!(
        firsts.len(),
        recorded.iter().filter(|o| !o.replayed).count(),
        "two calls answered the same record as theirs"
    );
    for (i, r) in answers.iter().enumerate().filter(|(i, _)| i % 8 == 7) {
        // The twin of call i - 1: the same key and content, answered with its record.
        match (r, &answers[i - 1]) {
            (Ok(a), Ok(b)) => assert_eq!(a.seq, b.seq, "call {i} and its twin name other records"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("call {i} and its twin were answered apart: {a:?} / {b:?}"),
        }
    }
    // The log: each key once, every fact followed by what it caused (its open mandate,
    // signed over that program and no other), the answers naming those records.
    let size = svc.ledger().size();
    let envs: Vec<Envelope> =
        svc.ledger().records(0).map(|r| Envelope::from_bytes(&r.unwrap().event).unwrap()).collect();
    let keys: Vec<&String> = envs.iter().filter_map(|e| e.key.as_ref()).collect();
    let unique: std::collections::BTreeSet<&&String> = keys.iter().collect();
    assert_eq!(keys.len(), unique.len(), "a key recorded twice");
    assert_eq!(keys.len() * 2, envs.len(), "a fact without its open mandate, or one more");
    for (seq, pair) in envs.chunks(2).enumerate() {
        let (fact, caused) = (&pair[0], &pair[1]);
        let Event::ProgramPublished { spec } = &fact.event else { panic!("record {} is not a fact", seq * 2) };
        assert_eq!(caused.cause, Some(seq as u64 * 2), "record {} names another cause", seq * 2 + 1);
        let Event::OpenMandateIssued { mandate, .. } = &caused.event else { panic!("no open mandate after {seq}") };
        let payload = settle_mandates::jws::parse(mandate, settle_mandates::types::TYP_OPEN_MANDATE).unwrap().payload;
        let open: settle_mandates::types::OpenMandate = serde_json::from_slice(&payload).unwrap();
        assert_eq!(open.program, spec.program, "record {}'s mandate was signed for another program", seq * 2 + 1);
    }
    for (r, o) in answers.iter().zip(&recorded) {
        assert_eq!(r.as_ref().unwrap().records[0].key, envs[usize::try_from(o.seq).unwrap()].key);
    }
    let again = rt.block_on(svc.try_submit(vec![publish_program("k0", "growth-k0", "P", Utc::now())])).remove(0);
    assert_eq!(envs.len(), 2 * (16 + calls - calls / 8), "a call recorded twice, or not at all");
    assert!(again.as_ref().is_ok_and(|o| o.replayed && o.seq == recorded[0].seq), "{again:?}");
    assert_eq!(svc.ledger().size(), size, "a retry wrote a record");
}

#[test]
fn groups_signed_out_of_turn_are_queued_in_the_order_they_were_decided() {
    let dir = tempfile::tempdir().unwrap();
    let svc = new_store(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Groups of very different sizes, decided one after another and signed at once: a
    // small group decided after a large one finishes signing first and must wait its turn.
    let sizes = [40usize, 1, 25, 2, 1, 33, 3, 1, 17, 1];
    let answers: Vec<Vec<Result<Outcome, SubmitError>>> = std::thread::scope(|s| {
        let direct: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let svc = &svc;
                s.spawn(move || {
                    let subs =
                        (0..n).map(|i| publish_program(&format!("d{t}-{i}"), &format!("d{t}-{i}"), "D", Utc::now()));
                    svc.submit_blocking(subs.collect())
                })
            })
            .collect();
        let doors = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for t in 0..32 {
                let svc = svc.clone();
                set.spawn(async move {
                    svc.try_submit(vec![publish_program(&format!("c{t}"), &format!("c{t}"), "C", Utc::now())]).await
                });
            }
            set.join_all().await
        });
        direct.into_iter().map(|h| h.join().unwrap()).chain(doors).collect()
    });
    let outcomes: Vec<&Outcome> =
        answers.iter().flatten().map(|r| r.as_ref().expect("every call is recorded")).collect();
    assert_eq!(outcomes.len(), sizes.iter().sum::<usize>() + 32);
    // Each answer names its own records, where the log holds them.
    let log = records(&svc);
    assert_eq!(log.len(), 2 * outcomes.len(), "a fact without its open mandate, or one more");
    for o in &outcomes {
        assert!(!o.replayed);
        for (i, r) in o.records.iter().enumerate() {
            assert_eq!(
                log[usize::try_from(o.seq).unwrap() + i],
                r.to_bytes(),
                "record {} is not the one answered",
                o.seq
            );
        }
    }
    // Nothing waits at the turnstile, and the log replays to the live state.
    assert_eq!(svc.turnstile.waiting(), 0);
    let live = svc.with_state(|s| serde_json::to_vec(s).unwrap());
    let keys = svc.key_home().load().unwrap();
    let mut engine = Engine::new(EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt().unwrap() });
    replay(svc.ledger(), &mut engine, 0, None).unwrap();
    assert_eq!(serde_json::to_vec(engine.state()).unwrap(), live);
}

#[test]
fn a_group_signed_before_its_turn_waits_for_the_group_decided_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let svc = new_store(dir.path());
    let (slots1, first) = svc.decide_group(vec![publish_program("t1", "t1", "T", Utc::now())], WhenFull::Wait);
    let (slots2, second) = svc.decide_group(vec![publish_program("t2", "t2", "T", Utc::now())], WhenFull::Wait);
    let (tx, rx) = std::sync::mpsc::channel();
    let then = |name: &'static str| -> pipeline::Then {
        let tx = tx.clone();
        Box::new(move |p| tx.send((name, p)).unwrap())
    };
    // The group decided second is signed first: it waits for its turn, nothing is queued.
    let out = svc.sign_and_queue(second.expect("decided"), slots2, then("second"));
    assert!(out.is_empty(), "a group was queued before the one decided before it");
    assert_eq!(svc.turnstile.waiting(), 1);
    assert_eq!(svc.ledger().wait_durable_blocking().map(|()| svc.ledger().size()).unwrap(), 0, "something was written");
    // The first group's arrival queues both, in the order they were decided.
    let out = svc.sign_and_queue(first.expect("decided"), slots1, then("first"));
    assert_eq!(svc.turnstile.waiting(), 0);
    pipeline::hand_over(out);
    let answers: Vec<(&str, Vec<Prepared>)> = rx.try_iter().collect();
    assert_eq!(answers.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["first", "second"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seqs: Vec<u64> =
        answers.into_iter().map(|(_, p)| rt.block_on(svc.complete(p)).remove(0).expect("recorded").seq).collect();
    assert_eq!(seqs, [0, 2], "the groups were recorded out of the order they were decided in");
    let keys: Vec<Option<String>> = records(&svc).iter().map(|b| Envelope::from_bytes(b).unwrap().key).collect();
    assert_eq!(keys, [Some("t1".into()), None, Some("t2".into()), None]);
}

/// A submission's content hash is SHA-256 of the canonical JSON of its principal, key and
/// request (or event): built member by member, it must be the same bytes as the whole
/// object canonicalised at once, whatever the strings and the request hold.
#[test]
fn the_content_hash_is_that_of_the_canonical_request_object() {
    let reference = |s: &Submit| -> [u8; 32] {
        let object = match &s.request {
            Some(r) => serde_json::json!({"by": s.by, "key": s.key, "request": r}),
            None => serde_json::json!({"by": s.by, "key": s.key, "event": s.event}),
        };
        request_hash(&object)
    };
    let mut plain = publish("k1", "Growth");
    assert_eq!(content_hash(&plain), reference(&plain));
    plain.key = "ключ \"quoted\" \\ \u{7} é 😀".into();
    plain.by = "agent:ä\n".into();
    assert_eq!(content_hash(&plain), reference(&plain));
    let mut with_request = plain.clone();
    with_request.request = Some(serde_json::json!({
        "zeta": [3, -1, 9007199254740991u64, 1.5, "€", null, true],
        "alpha": {"b": "x", "a": {"\u{e9}": 1, "e": 2, "\u{1f600}": 3, "\u{ff61}": 4}},
        "": "empty name",
    }));
    assert_eq!(content_hash(&with_request), reference(&with_request));
    assert_ne!(content_hash(&with_request), content_hash(&plain), "the request is hashed, not the event");
}
