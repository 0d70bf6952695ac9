//! Crash recovery: conversions driven from four threads while the server is killed with
//! SIGKILL twice; every acknowledged conversion must survive exactly once, retries must
//! be answered from the log, and the audit must pass.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const CONVERSIONS: usize = 300;
const THREADS: usize = 4;

struct Ctx {
    admin: String,
    keys: Vec<String>,
    bodies: Vec<Value>,
    /// Acknowledged (2xx): status and body of the last answer.
    acked: Mutex<BTreeMap<usize, (u16, Value)>>,
    /// Sent but unanswered at some point (connection lost in a crash).
    unknown: Mutex<BTreeSet<usize>>,
    /// Answers that are neither 2xx nor a lost connection.
    errors: Mutex<Vec<String>>,
}

/// Posts every conversion in `todo` from `THREADS` threads. With `kill_after`, kills the
/// server with SIGKILL as soon as that many were acknowledged in this phase.
fn phase(server: Server, todo: Vec<usize>, kill_after: Option<usize>, ctx: &Ctx) -> Option<Server> {
    let queue = Mutex::new(VecDeque::from(todo));
    let acked_now = AtomicUsize::new(0);
    let lost = AtomicBool::new(false);
    let api = server.api(Some(&ctx.admin));
    let mut server = Some(server);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                loop {
                    if lost.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(i) = queue.lock().unwrap().pop_front() else { break };
                    match api.try_post("/v1/conversions", &ctx.keys[i], &ctx.bodies[i]) {
                        Ok(r) if r.status == 200 || r.status == 201 => {
                            ctx.acked.lock().unwrap().insert(i, (r.status, r.json()));
                            acked_now.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => ctx.errors.lock().unwrap().push(format!(
                            "conversion {i} (key {}): {} {}",
                            ctx.keys[i],
                            r.status,
                            r.text()
                        )),
                        Err(_) => {
                            ctx.unknown.lock().unwrap().insert(i);
                            lost.store(true, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            });
        }
        if let Some(n) = kill_after {
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked_now.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "only {} acknowledged in 120 s", acked_now.load(Ordering::SeqCst));
                assert!(!queue.lock().unwrap().is_empty(), "ran out of work before the kill");
                std::thread::sleep(Duration::from_millis(2));
            }
            server.take().expect("server").kill9();
        }
    });
    server
}

fn not_acked(ctx: &Ctx) -> Vec<usize> {
    let acked = ctx.acked.lock().unwrap();
    (0..CONVERSIONS).filter(|i| !acked.contains_key(i)).collect()
}

fn mandates_of(v: &Value) -> Vec<(String, String)> {
    v["mandates"]
        .as_array()
        .expect("mandates")
        .iter()
        .map(|m| (m["mandate_id"].as_str().unwrap().to_owned(), m["mandate"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn acknowledged_conversions_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    keys_create(&data);
    let admin = token(&data, "vendor-admin", "ops", None, ADMIN_SCOPES);
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));

    // Setup: a program, four partners, twelve leads with chains of one to three hops.
    let partners = ["p1", "p2", "p3", "p4"];
    let mut last = api.post_expect("/v1/programs", "setup-program", &program_spec("growth"), 201);
    for p in partners {
        last = api.post_expect("/v1/partners", &format!("setup-{p}"), &enroll_body(p, "growth"), 201);
    }
    let mut leads = Vec::new();
    for j in 0..12 {
        let lead = format!("lead-{j}");
        let chain: Vec<&str> = (0..=j % 3).map(|k| partners[(j + k) % 4]).collect();
        last = api.post_expect("/v1/leads", &format!("setup-{lead}"), &lead_body(&lead, "growth", chain[0]), 201);
        for w in chain.windows(2) {
            last = api.post_expect(
                &format!("/v1/leads/{lead}/handoffs"),
                &format!("setup-{lead}-{}", w[1]),
                &json!({"from": w[0], "to": w[1]}),
                201,
            );
        }
        assert_eq!(last["outcome"]["chain"], json!(chain));
        leads.push(lead);
    }
    let setup_records = next_seq(&last);
    // The deal time is explicit so that a retry is the very same request.
    let occurred = chrono::Utc::now().to_rfc3339();
    let ctx = Ctx {
        admin: admin.clone(),
        keys: (0..CONVERSIONS).map(|i| format!("crash-key-{i}")).collect(),
        bodies: (0..CONVERSIONS)
            .map(|i| {
                json!({"conversion": format!("crash-{i}"), "lead": leads[i % leads.len()],
                       "revenue": format!("{}.{:02}", 50 + (i * 13) % 977, i % 100), "currency": "USD",
                       "occurred_at": occurred})
            })
            .collect(),
        acked: Mutex::new(BTreeMap::new()),
        unknown: Mutex::new(BTreeSet::new()),
        errors: Mutex::new(Vec::new()),
    };

    // Round 1: SIGKILL after 150 acknowledgements.
    assert!(phase(server, (0..CONVERSIONS).collect(), Some(150), &ctx).is_none());
    let after1 = ctx.acked.lock().unwrap().len();
    assert!((150..CONVERSIONS).contains(&after1), "acknowledged {after1} before the first kill");
    // Round 2, on a new port: retries of the unanswered ones first, SIGKILL after 75 more.
    let server = Server::start(&data, dir.path());
    assert!(phase(server, not_acked(&ctx), Some(75), &ctx).is_none());
    let after2 = ctx.acked.lock().unwrap().len();
    assert!(after2 >= after1 + 75 && after2 < CONVERSIONS, "acknowledged {after2} before the second kill");
    // Round 3: the rest.
    let server = Server::start(&data, dir.path());
    let server = phase(server, not_acked(&ctx), None, &ctx).expect("server still running");
    let errors = ctx.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "unexpected answers:\n{}", errors.join("\n"));
    assert_eq!(not_acked(&ctx), Vec::<usize>::new(), "every conversion acknowledged in the end");
    let acked = ctx.acked.lock().unwrap().clone();
    let unknown = ctx.unknown.lock().unwrap().clone();
    assert!(!unknown.is_empty(), "the kills should have cut some requests short");

    // Every acknowledged conversion is in the log exactly once: each of its mandates is
    // listed once, with the same token, and nothing else is listed.
    let api = server.api(Some(&admin));
    let mut listed: BTreeMap<String, (String, String)> = BTreeMap::new();
    for p in partners {
        let r = api.get(&format!("/v1/partners/{p}/mandates?limit=1000"));
        assert_eq!(r.status, 200, "{}", r.text());
        let items = r.json()["mandates"].as_array().unwrap().clone();
        assert!(items.len() < 1000);
        for m in items {
            let id = m["mandate_id"].as_str().unwrap().to_owned();
            let conv = jws_payload(m["mandate"].as_str().unwrap())["basis"]["conversion"].as_str().unwrap().to_owned();
            let prev = listed.insert(id.clone(), (conv, m["mandate"].as_str().unwrap().to_owned()));
            assert!(prev.is_none(), "mandate {id} listed twice");
        }
    }
    let mut expected_records = setup_records;
    let mut seqs = BTreeSet::new();
    let mut n_mandates = 0;
    for (i, (_, v)) in &acked {
        assert_eq!(v["outcome"]["outcome"], "settled", "conversion {i}: {v}");
        assert!(seqs.insert(v["seq"].as_u64().unwrap()), "two conversions at one seq");
        expected_records += records_of(v);
        let ms = mandates_of(v);
        assert_eq!(ms.len(), i % leads.len() % 3 + 1, "conversion {i}: one mandate per hop");
        for (id, tok) in ms {
            let (conv, listed_tok) =
                listed.get(&id).unwrap_or_else(|| panic!("mandate {id} of conversion {i} is lost"));
            assert_eq!(conv, &format!("crash-{i}"), "{id}");
            assert_eq!(listed_tok, &tok, "mandate {id} changed");
            n_mandates += 1;
        }
    }
    assert_eq!(listed.len(), n_mandates, "mandates listed that no acknowledged conversion caused");

    // Graceful stop, then the full audit of the data dir.
    let st = server.stop();
    assert!(st.success(), "settle serve exited {st} on SIGTERM");
    let out = settle_ok([std::ffi::OsString::from("audit"), "--data".into(), data.clone().into()]);
    assert!(out.starts_with("audit ok"), "{out}");
    assert!(out.contains(&format!(" {expected_records} records")), "expected {expected_records} records: {out}");

    // Restart (from the saved state) and re-post every acknowledged conversion with its
    // original key: a replay with the same sequence number and mandates, nothing written.
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    for (i, (_, v)) in &acked {
        let r = api.post("/v1/conversions", &ctx.keys[*i], &ctx.bodies[*i]);
        assert_eq!(r.status, 200, "re-post of conversion {i}: {}", r.text());
        let again = r.json();
        assert_eq!(again["replayed"], true, "conversion {i}");
        assert_eq!(again["seq"], v["seq"], "conversion {i}");
        assert_eq!(mandates_of(&again), mandates_of(v), "conversion {i}");
    }
    let next = api.post_expect("/v1/leads", "after-crash", &lead_body("lead-after", "growth", "p1"), 201);
    assert_eq!(next["seq"], json!(expected_records), "the replays wrote nothing");
    let st = server.stop();
    assert!(st.success(), "settle serve exited {st} on SIGTERM");
    let out = settle_ok([std::ffi::OsString::from("audit"), "--data".into(), data.into()]);
    assert!(out.contains(&format!(" {} records", expected_records + 2)), "{out}");
    eprintln!(
        "crash test: {after1} acknowledged before the first SIGKILL, {after2} before the second, {} requests cut short, {} answered as replays",
        unknown.len(),
        acked.values().filter(|(s, _)| *s == 200).count()
    );
}
