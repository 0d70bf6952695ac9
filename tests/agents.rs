//! The A2A agent card: required v1.0 fields, and a signature that verifies against the
//! vendor's JWKS over the RFC 8785 form of the card.

mod support;

use serde_json::Value;
use settle_mandates::keys::{Jwks, KeyRing};
use support::*;

#[test]
fn agent_card_has_the_a2a_fields_and_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    keys_create(&data);
    let server = Server::start(&data, dir.path());
    let api = server.api(None);
    let resp = api.get("/.well-known/agent-card.json");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let card = resp.json();
    for f in [
        "name",
        "description",
        "supportedInterfaces",
        "version",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "skills",
        "securitySchemes",
    ] {
        assert!(card.get(f).is_some(), "agent card lacks {f}");
    }
    let iface = &card["supportedInterfaces"][0];
    assert_eq!(iface["protocolVersion"], "1.0");
    assert_eq!(iface["url"].as_str().unwrap(), format!("http://{}/v1", server.addr));
    let skills = card["skills"].as_array().unwrap();
    assert!(skills.len() >= 5);
    for s in skills {
        for f in ["id", "name", "description", "tags"] {
            assert!(s.get(f).is_some(), "skill lacks {f}: {s}");
        }
    }

    // Verify: protected header + JCS(card without signatures) + signature, as a compact JWS.
    let jwks: Jwks = serde_json::from_slice(&api.get("/.well-known/jwks.json").body).unwrap();
    let ring = KeyRing::new(&jwks).unwrap();
    let sig = card["signatures"][0].clone();
    let mut unsigned = card.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let compact = |c: &Value| {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(settle_mandates::jcs::to_vec(c).unwrap());
        format!("{}.{payload}.{}", sig["protected"].as_str().unwrap(), sig["signature"].as_str().unwrap())
    };
    settle_mandates::jws::verify(&compact(&unsigned), &ring, "settle-agent-card+jws").expect("card signature verifies");
    // An edited card does not.
    let mut edited = unsigned.clone();
    edited["supportedInterfaces"][0]["url"] = "http://evil.example/v1".into();
    assert!(settle_mandates::jws::verify(&compact(&edited), &ring, "settle-agent-card+jws").is_err());
    // The card is the same on every request (it names the listen address, not the Host header).
    let again = api.get("/.well-known/agent-card.json").json();
    assert_eq!(again, card);
    server.stop();
}

#[test]
fn clawback_mandates_have_receipts_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    keys_create(&data);
    let admin =
        token(&data, "vendor-admin", "ops", None, "programs-write,leads-write,conversions-write,refunds-write,read");
    let partner = token(&data, "partner", "p1", None, "read");
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    api.post_expect("/v1/programs", "prog", &program_spec("growth"), 201);
    api.post_expect("/v1/partners", "p1", &enroll_body("p1", "growth"), 201);
    api.post_expect("/v1/leads", "lead", &lead_body("l1", "growth", "p1"), 201);
    let conv = serde_json::json!({"conversion": "d1", "lead": "l1", "revenue": "100.00", "currency": "USD"});
    api.post_expect("/v1/conversions", "conv", &conv, 201);
    let refund = serde_json::json!({"refund": "r1", "conversion": "d1", "amount": "25.00", "currency": "USD"});
    let r = api.post_expect("/v1/refunds", "refund", &refund, 201);
    let cb = r["mandates"][0].clone();
    assert_eq!(cb["direction"], "clawback");
    assert_eq!(cb["amount"]["amount"], 250, "25% of a 10.00 pool");
    let id = cb["mandate_id"].as_str().unwrap().to_owned();
    let mine = server.api(Some(&partner));
    let receipt = wait_for("a checkpoint covering the clawback", 10, || {
        let resp = mine.get(&format!("/v1/partners/p1/receipts/{id}"));
        (resp.status == 200).then_some(resp.body)
    });
    assert_eq!(api.get(&format!("/v1/partners/p2/receipts/{id}")).status, 404, "another partner's path");
    std::fs::write(dir.path().join("jwks.json"), api.get("/.well-known/jwks.json").body).unwrap();
    std::fs::write(dir.path().join("cb.json"), &receipt).unwrap();
    let out = settle([
        "verify".into(),
        "--keys".into(),
        dir.path().join("jwks.json").into_os_string(),
        dir.path().join("cb.json").into_os_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("1 receipts verified"), "{}", stdout(&out));
    server.stop();
}
