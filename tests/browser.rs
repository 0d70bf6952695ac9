//! The workspace in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, with the `fantoccini` client) against `settle serve` on the data of
//! `settle demo`. The vendor signs in, opens the partners and a partner's page, downloads
//! a receipt that `settle verify` accepts, reads the disputes and signs out; a partner
//! signs in, lands on its own page, and another partner's page is 404; a wrong token shows
//! the form's error. A screenshot of every page is kept in
//! `target/tmp/workspace-screenshots/`. Where `chromium` and `chromium-driver` are
//! missing, the test installs them as root (as `.ci/run` does).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::*;

/// Debian's Chromium and its WebDriver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(logdir: &Path) -> Self {
        let present = || Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists();
        // As the tests on PostgreSQL install its server, these install the browser where it
        // is missing, when they run as root (as on a fresh CI machine).
        if !present() && is_root() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            let _ = Command::new("apt-get").args(["install", "-y", "-qq", "chromium", "chromium-driver"]).status();
        }
        assert!(
            present(),
            "the browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        );
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let log = std::fs::File::create(logdir.join("chromedriver.log")).expect("log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chromedriver starts");
        let d = Self { child, port };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A new headless Chromium session with its own profile, on no network but the loopback.
async fn browser(d: &Driver, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a WebDriver session")
}

/// Where the screenshots go.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workspace-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A screenshot of the page shown, as `name.png`, once every field on it is labelled and
/// it has one `h1`.
async fn shot(c: &Client, name: &str) {
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]\
             .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.name)\
             .concat(document.querySelectorAll('h1').length === 1 ? [] : ['(not one h1)']);",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(unlabelled, serde_json::json!([]), "{name}: fields without a label");
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Signs in through the form with `token`.
async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.expect("goto /");
    c.find(Locator::Css("label[for=token]")).await.expect("the field is labelled");
    c.find(Locator::Id("token")).await.expect("token field").send_keys(token).await.expect("type");
    c.find(Locator::Css("button[type=submit]")).await.expect("button").click().await.expect("submit");
}

/// The page's `h1`, once it starts with `want` (a click's page may still be loading):
/// it, or the last one seen after ten seconds.
async fn heading(c: &Client, want: &str) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = match c.find(Locator::Css("h1")).await {
            Ok(h) => h.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if seen.starts_with(want) || Instant::now() > until {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_workspace_works_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    settle_ok(["demo", "--quiet", "--conversions", "200", "--seed", "11", "--data", data.to_str().expect("path")]);
    let vendor = token(&data, "vendor-admin", "finance", None, "read,programs-write");
    let p01 = token(&data, "partner", "p01", None, "read");
    let p02 = token(&data, "partner", "p02", None, "read");
    let server = Server::start(&data, dir.path());
    let base = format!("http://{}", server.addr);
    let driver = Driver::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // A wrong token: the form says why.
        let c = browser(&driver, &dir.path().join("profile-v")).await;
        sign_in(&c, &base, "stl_not_a_token").await;
        assert_eq!(heading(&c, "Sign in").await, "Sign in");
        let alert = c.wait().for_element(Locator::Css("[role=alert]")).await.expect("the form's error");
        let alert = alert.text().await.expect("text");
        assert!(!alert.is_empty(), "an error is shown");
        shot(&c, "sign-in-error").await;

        // The vendor: overview, partners, a partner's page, a receipt, disputes, sign-out.
        sign_in(&c, &base, &vendor).await;
        assert_eq!(heading(&c, "Overview").await, "Overview");
        let cookie = c.get_named_cookie("settle_session").await.expect("the session cookie");
        assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
        shot(&c, "overview").await;
        // The keyboard: the first Tab reaches the link past the navigation, and it leads
        // to the page's heading.
        c.active_element().await.expect("active").send_keys("\u{E004}").await.expect("Tab");
        let first = c.active_element().await.expect("active");
        assert_eq!(first.text().await.expect("text"), "Skip to the page");
        first.send_keys("\u{E007}").await.expect("Enter");
        let url = c.current_url().await.expect("url");
        assert_eq!(url.fragment(), Some("main"), "{url}");
        c.find(Locator::LinkText("growth")).await.expect("a program").click().await.expect("click");
        assert_eq!(heading(&c, "Program growth").await, "Program growth");
        shot(&c, "program").await;
        c.find(Locator::LinkText("Partners")).await.expect("nav").click().await.expect("click");
        assert_eq!(heading(&c, "Partners").await, "Partners");
        shot(&c, "partners").await;
        c.find(Locator::LinkText("p01")).await.expect("p01 listed").click().await.expect("click");
        assert_eq!(heading(&c, "Partner p01").await, "Partner p01");
        shot(&c, "partner").await;
        let link = c.find(Locator::LinkText("Download receipt")).await.expect("a receipt to download");
        let href = link.attr("href").await.expect("href").expect("an href");
        // The file the link gives, fetched with the browser's session, verifies offline.
        let r = http(server.addr, "GET", &href, &[("Cookie", &format!("settle_session={}", cookie.value()))], None)
            .expect("GET receipt");
        assert_eq!(r.status, 200, "{}", r.text());
        let file = dir.path().join("receipt.json");
        std::fs::write(&file, &r.body).expect("receipt");
        let out = settle([
            "verify".into(),
            "--keys".into(),
            data.join("bundle").join("jwks.json").into_os_string(),
            file.into_os_string(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        // From the partner's mandates to a conversion's chain, drawn.
        c.find(Locator::Css("td a[href^='/conversions/']")).await.expect("a conversion").click().await.expect("click");
        let title = heading(&c, "Conversion ").await;
        assert!(title.starts_with("Conversion "), "{title}");
        c.find(Locator::Css("svg[role=img] rect")).await.expect("the chain drawn");
        shot(&c, "conversion").await;
        c.find(Locator::LinkText("Disputes")).await.expect("nav").click().await.expect("click");
        assert_eq!(heading(&c, "Disputes").await, "Disputes");
        shot(&c, "disputes").await;
        c.find(Locator::LinkText("Payouts")).await.expect("nav").click().await.expect("click");
        assert_eq!(heading(&c, "Payout batches").await, "Payout batches");
        c.find(Locator::Css("td a[href*='/receipts/']")).await.expect("a batch's mandates");
        shot(&c, "payouts").await;
        c.find(Locator::LinkText("Webhooks")).await.expect("nav").click().await.expect("click");
        assert_eq!(heading(&c, "Webhooks").await, "Webhooks");
        shot(&c, "webhooks").await;

        // The program editor: rules that break the schema are not recorded, and say why
        // beside the text.
        c.find(Locator::LinkText("Overview")).await.expect("nav").click().await.expect("click");
        c.find(Locator::LinkText("Publish a program")).await.expect("link").click().await.expect("click");
        assert_eq!(heading(&c, "Publish a program").await, "Publish a program");
        let spec = c.find(Locator::Id("spec")).await.expect("the editor");
        spec.clear().await.expect("clear");
        spec.send_keys(r#"{"program": "broken", "currency": "USD"}"#).await.expect("type");
        c.find(Locator::Css("main button[type=submit]")).await.expect("publish").click().await.expect("click");
        let alert = c.wait().for_element(Locator::Css("#spec-error[role=alert]")).await.expect("the error");
        let alert = alert.text().await.expect("text");
        assert!(alert.contains("missing field"), "{alert}");
        let editor = c.find(Locator::Id("spec")).await.expect("the editor again");
        assert_eq!(editor.attr("aria-invalid").await.expect("attr").as_deref(), Some("true"));
        assert_eq!(editor.attr("aria-describedby").await.expect("attr").as_deref(), Some("spec-error"));
        shot(&c, "program-editor-error").await;
        // The amendment's editor starts from the rules in force.
        c.goto(&format!("{base}/programs/growth/amendments")).await.expect("goto");
        assert_eq!(heading(&c, "Amend program growth").await, "Amend program growth");
        let text = c.find(Locator::Id("spec")).await.expect("the editor").prop("value").await.expect("value");
        assert!(text.is_some_and(|t| t.contains("\"program\": \"growth\"")), "the rules in force");
        shot(&c, "program-amend").await;

        // The audit of the live log, started from its page: progress, then the result.
        c.find(Locator::LinkText("Audit")).await.expect("nav").click().await.expect("click");
        assert_eq!(heading(&c, "Audit").await, "Audit");
        c.find(Locator::Css("main form button")).await.expect("start").click().await.expect("click");
        let until = Instant::now() + Duration::from_secs(60);
        while !c.source().await.expect("source").contains("Passed:") {
            assert!(Instant::now() < until, "the audit passed within a minute");
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.refresh().await.expect("refresh");
        }
        shot(&c, "audit").await;
        c.find(Locator::Css("header form button")).await.expect("sign out").click().await.expect("click");
        assert_eq!(heading(&c, "Sign in").await, "Sign in", "signed out: the form again");
        c.close().await.expect("close");

        // A partner: its own page; another partner's is not found.
        let c = browser(&driver, &dir.path().join("profile-p")).await;
        sign_in(&c, &base, &p01).await;
        assert_eq!(heading(&c, "Partner p01").await, "Partner p01");
        shot(&c, "partner-own").await;
        for (link, title, name) in [
            ("Leads", "Leads of p01", "leads"),
            ("Agents", "Agents of p01", "agents"),
            ("Statement", "Statement of p01", "statement"),
        ] {
            c.find(Locator::LinkText(link)).await.expect("nav").click().await.expect("click");
            assert_eq!(heading(&c, title).await, title);
            shot(&c, name).await;
        }
        let csv = c.find(Locator::LinkText("Download this statement as CSV")).await.expect("the CSV link");
        let href = csv.attr("href").await.expect("href").expect("an href");
        let session = c.get_named_cookie("settle_session").await.expect("the session cookie");
        let r = http(server.addr, "GET", &href, &[("Cookie", &format!("settle_session={}", session.value()))], None)
            .expect("GET statement.csv");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().starts_with("seq,at,entry,reference,mandate_id"), "{}", r.text());
        c.goto(&format!("{base}/partners/p02")).await.expect("goto");
        assert_eq!(heading(&c, "Not found").await, "Not found");
        assert!(!c.source().await.expect("source").contains("md_"), "nothing of p02's is shown");
        shot(&c, "partner-other-404").await;
        c.close().await.expect("close");

        // A second partner: its own page; the first's is not found.
        let c = browser(&driver, &dir.path().join("profile-p2")).await;
        sign_in(&c, &base, &p02).await;
        assert_eq!(heading(&c, "Partner p02").await, "Partner p02");
        c.goto(&format!("{base}/partners/p01/statement")).await.expect("goto");
        assert_eq!(heading(&c, "Not found").await, "Not found");
        c.close().await.expect("close");
    });
    server.stop();
    for name in [
        "sign-in-error",
        "overview",
        "partners",
        "partner",
        "conversion",
        "disputes",
        "partner-own",
        "partner-other-404",
        "payouts",
        "webhooks",
        "program-editor-error",
        "program-amend",
        "audit",
        "leads",
        "statement",
        "agents",
    ] {
        assert!(shots().join(format!("{name}.png")).exists(), "{name} screenshot");
    }
}
