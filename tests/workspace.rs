//! The workspace's pages over plain HTTP against `settle serve`: sign-in with an API token
//! sets an HttpOnly, SameSite=Strict session cookie (Secure behind TLS); sign-out needs
//! the session's CSRF token; the vendor sees the overview, the partners and their pages;
//! a partner sees only its own (another's page, list or receipt is 404); a downloaded
//! receipt verifies with `settle verify`; a revoked token ends its session.

mod support;

use support::*;

/// A request with headers, as a browser would send it; the response.
fn req(
    server: &Server,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    more: &[(&str, &str)],
) -> Resp {
    let mut h: Vec<(&str, &str)> = more.to_vec();
    let c = cookie.map(|c| format!("settle_session={c}"));
    if let Some(c) = &c {
        h.push(("Cookie", c));
    }
    if form.is_some() {
        h.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    http(server.addr, method, path, &h, form.map(str::as_bytes)).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Signs in with `token`: the session id the cookie carries, and the cookie as set.
fn sign_in(server: &Server, token: &str, more: &[(&str, &str)]) -> (String, String) {
    let r = req(server, "POST", "/session", None, Some(&format!("token={token}")), more);
    assert_eq!((r.status, r.header("location")), (303, Some("/")), "{}", r.text());
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    let id = set.split(';').next().and_then(|c| c.strip_prefix("settle_session=")).expect("the cookie").to_owned();
    (id, set)
}

/// The CSRF token a page's forms carry.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with the CSRF token") + 19;
    page[at..at + 64].to_owned()
}

#[test]
fn people_sign_in_see_what_their_token_may_see_and_sign_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let admin =
        token(&data, "vendor-admin", "ops", None, "programs-write,leads-write,conversions-write,read,tokens-write");
    let p1 = token(&data, "partner", "p1", None, "read");
    let server = Server::start(&data, dir.path());
    let a = server.api(Some(&admin));
    let (md1, md2) = two_hop_deal(&a, "123456.78");

    // Before sign-in: the form. A wrong token: the form again, saying why, and no cookie.
    let r = req(&server, "GET", "/", None, None, &[]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<label for=\"token\">API token</label>"), "{}", r.text());
    let r = req(&server, "POST", "/session", None, Some("token=stl_nope"), &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none() && r.text().contains("role=\"alert\""), "{}", r.text());
    assert_eq!(req(&server, "GET", "/partners", None, None, &[]).status, 401);

    // The vendor: the cookie's flags; Secure when a proxy says the request came over TLS.
    let (vendor, set) = sign_in(&server, &admin, &[]);
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    let (_, tls) = sign_in(&server, &admin, &[("X-Forwarded-Proto", "https")]);
    assert!(tls.contains("; Secure"), "{tls}");
    let home = req(&server, "GET", "/", Some(&vendor), None, &[]);
    assert_eq!(home.status, 200);
    assert_eq!(home.header("cache-control"), Some("no-store"));
    let page = home.text();
    // Pool 12,345.68: p1 3,703.70 and p2 8,641.98, grouped and with the currency's symbol.
    assert!(page.contains("$12,345.68"), "the total earned: {page}");
    let month = chrono::Utc::now().format("%B %Y").to_string();
    let earned = format!("Earned, {month}</th><td class=\"n\">$12,345.68</td>");
    assert!(page.contains(&earned), "this month's earned: {page}");
    assert!(page.contains("growth") && page.contains("Signed in as vendor:ops"), "{page}");
    let list = req(&server, "GET", "/partners?q=p2", Some(&vendor), None, &[]).text();
    assert!(list.contains("href=\"/partners/p2\"") && !list.contains("href=\"/partners/p1\""), "search: {list}");
    let p2_page = req(&server, "GET", "/partners/p2", Some(&vendor), None, &[]).text();
    assert!(p2_page.contains(&md2) && p2_page.contains("$8,641.98"), "{p2_page}");

    // A program's rules in plain words, every version.
    let rules = req(&server, "GET", "/programs/growth", Some(&vendor), None, &[]).text();
    assert!(rules.contains("Rule version 1") && rules.contains("Pool of a deal: 10%"), "{rules}");

    // The conversion's chain: drawn, every hop's money to the vendor.
    let chain = req(&server, "GET", "/conversions/d1", Some(&vendor), None, &[]).text();
    assert!(chain.contains("<svg") && chain.contains("originator") && chain.contains("closer"), "{chain}");
    assert!(chain.contains("$3,703.70") && chain.contains("$8,641.98") && chain.contains(&md2), "{chain}");

    // A partner: sent to its own page; another partner's page, list and receipt are 404.
    let (mine, _) = sign_in(&server, &p1, &[]);
    let r = req(&server, "GET", "/", Some(&mine), None, &[]);
    assert_eq!((r.status, r.header("location")), (303, Some("/partners/p1")));
    let own = req(&server, "GET", "/partners/p1", Some(&mine), None, &[]);
    assert_eq!(own.status, 200);
    assert!(own.text().contains(&md1) && own.text().contains("$3,703.70"), "{}", own.text());
    // On the conversion's page, its own money only.
    let chain = req(&server, "GET", "/conversions/d1", Some(&mine), None, &[]).text();
    assert!(chain.contains("$3,703.70") && !chain.contains("$8,641.98") && !chain.contains(&md2), "{chain}");
    assert_eq!(req(&server, "GET", "/programs/growth", Some(&mine), None, &[]).status, 200, "its own program");
    for path in ["/partners/p2", "/partners", &format!("/partners/p2/receipts/{md2}")] {
        let r = req(&server, "GET", path, Some(&mine), None, &[]);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains(&md2), "{path} names p2's mandate");
    }

    // p1's receipt, downloaded once a checkpoint covers it, verifies offline.
    let path = format!("/partners/p1/receipts/{md1}");
    let file = wait_for("a checkpoint covering the mandate", 15, || {
        let r = req(&server, "GET", &path, Some(&mine), None, &[]);
        (r.status == 200).then_some(r)
    });
    assert!(file.header("content-disposition").is_some_and(|d| d.starts_with("attachment")), "a download");
    std::fs::write(dir.path().join("jwks.json"), a.get("/.well-known/jwks.json").body).expect("jwks");
    std::fs::write(dir.path().join("receipt.json"), &file.body).expect("receipt");
    let out = settle([
        "verify".into(),
        "--keys".into(),
        dir.path().join("jwks.json").into_os_string(),
        dir.path().join("receipt.json").into_os_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Sign-out: refused without the session's CSRF token, done with it.
    let r = req(&server, "POST", "/session/end", Some(&mine), Some("csrf=00"), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(req(&server, "GET", "/partners/p1", Some(&mine), None, &[]).status, 200, "still signed in");
    let token = csrf(&own.text());
    let r = req(&server, "POST", "/session/end", Some(&mine), Some(&format!("csrf={token}")), &[]);
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")), "the cookie cleared");
    assert_eq!(req(&server, "GET", "/partners/p1", Some(&mine), None, &[]).status, 401, "the session ended");

    // A revoked token ends its session at the next page.
    let tokens = a.get("/v1/tokens").json();
    let id = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["subject"] == "ops")
        .and_then(|t| t["id"].as_str())
        .expect("the admin's token")
        .to_owned();
    let r = http(
        server.addr,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        &[("Authorization", &format!("Bearer {admin}")), ("Idempotency-Key", "rv")],
        None,
    )
    .expect("DELETE");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = req(&server, "GET", "/", Some(&vendor), None, &[]);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("role=\"alert\""), "{}", r.text());
    server.stop();
}

/// `fields` of a form, URL-encoded, after the CSRF token and idempotency key of `page`'s
/// first form.
fn form(page: &str, key: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!("csrf={}&key={key}", csrf(page));
    for (k, v) in fields {
        let enc: String = v
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        s.push_str(&format!("&{k}={enc}"));
    }
    s
}

#[test]
fn forms_write_through_the_api_rules_once_and_refuse_without_the_csrf_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let all = "programs-write,leads-write,conversions-write,refunds-write,settlements-write,read,webhooks-write";
    let admin = token(&data, "vendor-admin", "ops", None, all);
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let server = Server::start(&data, dir.path());
    let a = server.api(Some(&admin));
    let (md1, md2) = two_hop_deal(&a, "1000.00");
    let (vendor, _) = sign_in(&server, &admin, &[]);
    let get = |path: &str, who: &str| req(&server, "GET", path, Some(who), None, &[]);
    let post = |path: &str, who: &str, body: &str| req(&server, "POST", path, Some(who), Some(body), &[]);

    // The program editor: a schema error and a rule's refusal show beside the text as sent;
    // nothing is recorded until the rules pass; a form sent twice records once.
    let editor = get("/programs", &vendor).text();
    let mut spec = program_spec("np");
    spec["bogus"] = serde_json::json!(1);
    let r = post("/programs", &vendor, &form(&editor, "e1", &[("spec", &spec.to_string())]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("role=\"alert\"") && r.text().contains("unknown field `bogus`"), "{}", r.text());
    assert!(r.text().contains("&quot;bogus&quot;: 1") || r.text().contains("&quot;bogus&quot;:1"), "the text kept");
    let mut spec = program_spec("np");
    spec["split"]["closer"] = serde_json::json!("70");
    let r = post("/programs", &vendor, &form(&editor, "e2", &[("spec", &spec.to_string())]));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("over 100%"), "{}", r.text());
    let r = post("/programs", &vendor, &format!("csrf=00&key=e3&spec={}", "%7B%7D"));
    assert_eq!(r.status, 403, "no CSRF token, nothing read: {}", r.text());
    assert_eq!(a.get("/v1/programs/np").status, 404, "nothing recorded");
    let good = form(&editor, "e4", &[("spec", &program_spec("np").to_string())]);
    for _ in 0..2 {
        let r = post("/programs", &vendor, &good);
        assert_eq!((r.status, r.header("location")), (303, Some("/programs/np")), "{}", r.text());
    }
    assert_eq!(a.get("/v1/programs/np").json()["versions"].as_array().map(Vec::len), Some(1), "recorded once");

    // Enroll, then suspend.
    let list = get("/partners", &vendor).text();
    let r = post(
        "/partners",
        &vendor,
        &form(&list, "n1", &[("partner", "e1"), ("name", "E One"), ("program", "np"), ("role", "partner")]),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/partners/e1")), "{}", r.text());
    let r = post("/partners/e1/suspend", &vendor, &form(&list, "s1", &[("reason", "left")]));
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(get("/partners/e1", &vendor).text().contains("Suspended"));

    // Book a payout of what p2 has payable; it is listed with its mandate.
    let p2_page = get("/partners/p2", &vendor).text();
    assert!(p2_page.contains("Book a payout of the 1 payable mandates"), "{p2_page}");
    let r = post("/partners/p2/payouts", &vendor, &form(&p2_page, "b1", &[("batch", "wb1")]));
    assert_eq!(r.status, 303, "{}", r.text());
    let batches = a.get("/v1/payouts?partner=p2").json();
    assert_eq!(batches["batches"][0]["batch"], "wb1", "{batches}");
    assert_eq!(batches["batches"][0]["mandate_ids"], serde_json::json!([md2]), "{batches}");
    assert!(get("/payouts", &vendor).text().contains("wb1"));
    // Paid, its mandates are still listed (from the batch's fact in the log).
    let paid = serde_json::json!({"settlement": "st1", "batch": "wb1", "partner": "p2", "rail": "book", "mandate_ids": [md2], "confirmation_id": "c1"});
    a.post_expect("/v1/settlements", "st1", &paid, 201);
    let batches = a.get("/v1/payouts?partner=p2&status=paid").json();
    assert_eq!(batches["batches"][0]["mandate_ids"], serde_json::json!([md2]), "{batches}");

    // Record a refund of half the deal: the conversion's page shows what was clawed back.
    let conv = get("/conversions/d1", &vendor).text();
    let r = post(
        "/refunds",
        &vendor,
        &form(
            &conv,
            "r1",
            &[("refund", "rf1"), ("conversion", "d1"), ("size", "fraction"), ("value", "0.5"), ("currency", "USD")],
        ),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/conversions/d1")), "{}", r.text());
    assert!(get("/conversions/d1", &vendor).text().contains("clawed back $15.00"), "half of p1's 30.00");
    let r = post(
        "/refunds",
        &vendor,
        &form(
            &conv,
            "r2",
            &[("refund", "rf2"), ("conversion", "d1"), ("size", "fraction"), ("value", "7"), ("currency", "USD")],
        ),
    );
    assert_eq!(r.status, 422, "a fraction over 1 is refused by the API's rules: {}", r.text());
    assert!(r.text().contains("refund fraction 7 is not in (0, 1]"), "{}", r.text());

    // p1's statement as CSV, its leads; p2's are not found for p1.
    let (mine, _) = sign_in(&server, &p1, &[]);
    let csv = get("/partners/p1/statement.csv?from=2000-01-01&to=2100-01-01", &mine);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    assert!(text.starts_with("seq,at,entry,reference,mandate_id") && text.contains(&md1), "{text}");
    assert!(text.contains(",clawback,") && text.lines().last().is_some_and(|l| l.contains(",closing,")), "{text}");
    assert!(get("/partners/p1/leads", &mine).text().contains("l1"));
    for path in ["/partners/p2/statement", "/partners/p2/statement.csv", "/partners/p2/leads", "/partners/p2/agents"] {
        assert_eq!(get(path, &mine).status, 404, "{path}");
    }

    // A partner authorises agents within its own token's scopes, and revokes them.
    let agents = get("/partners/p1/agents", &mine).text();
    let r = post(
        "/partners/p1/agents",
        &mine,
        &form(&agents, "g1", &[("agent", "bot1"), ("scopes", "read"), ("scopes", "leads_write"), ("days", "30")]),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let r = post(
        "/partners/p1/agents",
        &mine,
        &form(&agents, "g2", &[("agent", "bot2"), ("scopes", "disputes_write"), ("days", "30")]),
    );
    assert_eq!(r.status, 403, "a scope its token lacks: {}", r.text());
    let r = post("/agents/bot1/revoke", &mine, &form(&agents, "g3", &[("partner", "p1")]));
    assert_eq!(r.status, 303, "{}", r.text());
    // Never for another partner: a grant in p2's name is forbidden, p2's agent is not
    // found, and a payout is the vendor's.
    let r = post(
        "/partners/p2/agents",
        &mine,
        &form(&agents, "g4", &[("agent", "bot3"), ("scopes", "read"), ("days", "30")]),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let now = chrono::Utc::now();
    let grant = serde_json::json!({"agent": "bot-p2", "partner": "p2", "scopes": ["read"],
        "not_before": now.to_rfc3339(), "expires_at": (now + chrono::Duration::days(1)).to_rfc3339()});
    a.post_expect("/v1/agents", "bot-p2", &grant, 201);
    let r = post("/agents/bot-p2/revoke", &mine, &form(&agents, "g5", &[("partner", "p2")]));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = post("/partners/p2/payouts", &mine, &form(&agents, "g6", &[("batch", "wb9")]));
    assert_eq!(r.status, 403, "{}", r.text());
    let listed = a.get("/v1/partners/p1/agents").json();
    assert_eq!(listed["agents"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        (listed["agents"][0]["agent"].clone(), listed["agents"][0]["revoked"].clone()),
        (serde_json::json!("bot1"), serde_json::json!(true))
    );

    // The audit of the live log, in the background, to its result.
    assert_eq!(get("/audit", &mine).status, 403, "the vendor's");
    let page = get("/audit", &vendor).text();
    let r = post("/audit", &vendor, &form(&page, "a1", &[]));
    assert_eq!((r.status, r.header("location")), (303, Some("/audit")), "{}", r.text());
    let done = wait_for("the audit to pass", 30, || {
        let v = a.get("/v1/audits/au_1").json();
        (v["status"] != "running").then_some(v)
    });
    assert_eq!(done["status"], "passed", "{done}");
    assert!(done["finding"]["records"].as_u64().is_some_and(|n| n > 10), "{done}");
    assert!(get("/audit", &vendor).text().contains("Passed:"));
    server.stop();
}

#[test]
fn webhook_pages_show_subscriptions_and_dead_letters_and_deliver_them_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let admin =
        token(&data, "vendor-admin", "ops", None, "programs-write,leads-write,conversions-write,read,webhooks-write");
    let p1 = token(&data, "partner", "p1", None, "read");
    let flags = ["--webhook-allow-private", "--webhook-attempts", "1", "--webhook-backoff-ms", "1"];
    let server = Server::start_with(&data, dir.path(), &flags);
    let a = server.api(Some(&admin));
    // A receiver that is not there: every delivery fails at once and becomes a dead letter.
    let sub = a.post_expect("/v1/webhooks", "sub", &serde_json::json!({"url": "http://127.0.0.1:9/hooks"}), 201);
    let id = sub["id"].as_str().expect("id").to_owned();
    two_hop_deal(&a, "100.00");
    wait_for("dead letters", 30, || {
        let d = a.get(&format!("/v1/webhooks/{id}/dead-letters")).json();
        d["dead_letters"].as_array().is_some_and(|l| !l.is_empty()).then_some(())
    });
    let (vendor, _) = sign_in(&server, &admin, &[]);
    let list = req(&server, "GET", "/webhooks", Some(&vendor), None, &[]).text();
    assert!(list.contains(&format!("href=\"/webhooks/{id}\"")) && list.contains("http://127.0.0.1:9/hooks"), "{list}");
    let page = req(&server, "GET", &format!("/webhooks/{id}"), Some(&vendor), None, &[]).text();
    assert!(page.contains("Dead letters") && page.contains("evt_"), "{page}");
    let r = req(&server, "POST", &format!("/webhooks/{id}/replay"), Some(&vendor), Some(&form(&page, "rp1", &[])), &[]);
    assert_eq!((r.status, r.header("location")), (303, Some(format!("/webhooks/{id}").as_str())), "{}", r.text());
    let r = req(&server, "POST", &format!("/webhooks/{id}/replay"), Some(&vendor), Some("csrf=00&key=rp2"), &[]);
    assert_eq!(r.status, 403, "no CSRF token: {}", r.text());
    // A partner does not see the vendor's subscription.
    let (mine, _) = sign_in(&server, &p1, &[]);
    assert_eq!(req(&server, "GET", &format!("/webhooks/{id}"), Some(&mine), None, &[]).status, 404);
    assert!(!req(&server, "GET", "/webhooks", Some(&mine), None, &[]).text().contains(&id));
    server.stop();
}
