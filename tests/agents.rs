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
