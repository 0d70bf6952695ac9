"""Runs Schemathesis against a live `settle serve`, for tests/schemathesis.rs.

Started inside a network namespace of its own that holds only the loopback interface
(the test runs it under `unshare --net`), so nothing the fuzzer makes the server do (a
webhook subscription to a public URL, say) can reach any other host. It starts the
server on 127.0.0.1, populates the store with real data (a program, partners, leads, a
conversion with mandates, an agent, webhook subscriptions), writes the Schemathesis
configuration that points path parameters and body fields at those ids, runs
`schemathesis run <url>/openapi.json -c all` as a partner and then as a vendor
administrator, stops the server, and prints one JSON line: each run's exit code, time
and output file.

usage: schemathesis_run.py SETTLE DATA WORKDIR SCHEMATHESIS ADMIN PARTNER SPARE_TOKEN_ID MAX_EXAMPLES SEED
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

SETTLE, DATA, WORK, SCHEMATHESIS, ADMIN, PARTNER, SPARE, MAX_EXAMPLES, SEED = sys.argv[1:10]
ADDR = "127.0.0.1:8417"  # a namespace of its own: the port is free
BASE = f"http://{ADDR}"
# Longest the server may live, whatever happens to this script.
SERVER_LIFE_SECS = 1500


def call(method, path, body=None, key=None, token=ADMIN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def must(what, got, status=201):
    if got[0] != status:
        sys.exit(f"setup: {what}: expected {status}, got {got[0]} {got[1]}")
    return got[1]


def populate():
    spec = {
        "program": "growth",
        "name": "Growth partners",
        "currency": "USD",
        "holding_days": 0,
        "attribution_window_days": 120,
        "pool_rounding": "half_even",
        "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "40", "remaining": "closer"},
        "valid_from": "2025-01-01T00:00:00Z",
    }
    must("program", call("POST", "/v1/programs", spec, "setup-program"))
    for p in ["p1", "p2", "p3"]:
        body = {"partner": p, "program": "growth", "name": "Partner " + p, "role": "partner"}
        must("partner " + p, call("POST", "/v1/partners", body, "setup-" + p))
    for lead in ["l1", "l2"]:
        body = {"lead": lead, "program": "growth", "customer": lead + ".example", "partner": "p1"}
        must("lead " + lead, call("POST", "/v1/leads", body, "setup-" + lead))
    must("handoff", call("POST", "/v1/leads/l1/handoffs", {"from": "p1", "to": "p2"}, "setup-handoff"))
    conv = {"conversion": "c1", "lead": "l1", "revenue": "1000.00", "currency": "USD"}
    mandates = [m["mandate_id"] for m in must("conversion", call("POST", "/v1/conversions", conv, "setup-c1"))["mandates"]]
    grant = {"agent": "a1", "partner": "p1", "scopes": ["read"], "not_before": "2025-01-01T00:00:00Z",
             "expires_at": "2035-01-01T00:00:00Z"}
    must("agent", call("POST", "/v1/agents", grant, "setup-a1"))
    # Public URLs, as the server requires; in this namespace nothing is delivered.
    hooks = [
        must("vendor subscription", call("POST", "/v1/webhooks", {"url": "https://hooks.example/settle"}, "setup-w1"))["id"],
        must("partner subscription", call("POST", "/v1/webhooks", {"url": "https://p1.example/hooks"}, "setup-w2",
                                          token=PARTNER))["id"],
    ]
    deadline = time.time() + 60
    while call("GET", f"/v1/partners/p1/receipts/{mandates[0]}")[0] != 200:
        if time.time() > deadline:
            sys.exit("setup: no checkpoint covered the conversion within 60 s")
        time.sleep(0.2)
    return {"mandates": mandates, "hooks": hooks}


def config(ids):
    """The Schemathesis configuration: every check; real ids for path parameters and
    body fields most of the time (generated ones the rest)."""
    q = json.dumps
    lines = [
        "[auth.openapi.bearer]",
        'bearer = "${SETTLE_TOKEN}"',
        "",
        # A request the document allows may still be refused by the rules (an unknown
        # program, a split over 100 %): that is 422, as the document says. 400 is for
        # requests the document forbids, and stays a failure for valid data.
        "[checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]',
        "",
    ]
    dictionaries = {
        "partners": ["p1", "p2", "p3"],
        "programs": ["growth"],
        "leads": ["l1", "l2"],
        "conversions": ["c1"],
        "agents": ["a1"],
        "mandates": ids["mandates"],
        "hooks": ids["hooks"],
        "suspendable": ["p3"],
        # Never the running tokens: revoking them would end the run.
        "spare_token": [SPARE],
    }
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {q(values)}", ""]
    operations = [
        (["getProgram", "amendProgram"], {"path.id": "programs"}),
        (["getBalance", "listMandates"], {"path.id": "partners"}),
        (["registerPayoutInstrument", "getPayoutInstrument", "erasePayoutInstrument"], {"path.id": "partners"}),
        (["suspendPartner"], {"path.id": "suspendable"}),
        (["getReceipt"], {"path.id": "partners", "path.mandate": "mandates"}),
        (["revokeAgent"], {"path.id": "agents"}),
        (["handOffLead"], {"path.id": "leads", "body.from": "partners", "body.to": "partners"}),
        (["releaseConversion"], {"path.id": "conversions"}),
        (["getWebhook", "deleteWebhook", "listDeadLetters", "replayWebhook"], {"path.id": "hooks"}),
        (["revokeToken"], {"path.id": "spare_token"}),
        (["registerLead"], {"body.program": "programs", "body.partner": "partners"}),
        (["recordConversion"], {"body.lead": "leads"}),
        (["recordRefund"], {"body.conversion": "conversions"}),
        (["createPayout", "recordSettlement"], {"body.partner": "partners", "body.mandate_ids[*]": "mandates"}),
        (["enrollPartner"], {"body.program": "programs"}),
        (["authoriseAgent"], {"body.partner": "partners"}),
    ]
    for names, params in operations:
        bound = ", ".join(
            f"{q(k)} = {{ dictionary = {q(v)}, probability = {1.0 if v == 'spare_token' else 0.8} }}"
            for k, v in params.items()
        )
        lines += ["[[operations]]", f"include-operation-id = {q(names)}", f"parameters = {{ {bound} }}", ""]
    # MCP's streamable HTTP needs this Accept (the document says so; OpenAPI cannot
    # declare an Accept parameter).
    lines += ["[[operations]]", 'include-path = "/mcp"', 'headers = { Accept = "application/json, text/event-stream" }', ""]
    path = os.path.join(WORK, "schemathesis.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main():
    log = open(os.path.join(WORK, "serve.log"), "w")
    server = subprocess.Popen(
        ["timeout", str(SERVER_LIFE_SECS), SETTLE, "serve", "--data", DATA, "--listen", ADDR],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                if call("GET", "/openapi.json", token=None)[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                sys.exit("settle serve did not answer within 60 s")
            time.sleep(0.1)
        cfg = config(populate())
        runs = {}
        for who, token in [("partner", PARTNER), ("vendor", ADMIN)]:
            out = os.path.join(WORK, f"schemathesis-{who}.txt")
            args = [SCHEMATHESIS, "--config-file", cfg, "--no-color", "run", f"{BASE}/openapi.json", "--url", BASE,
                    "-c", "all", "--max-examples", MAX_EXAMPLES, "--seed", SEED, "--generation-database", "none"]
            start = time.time()
            with open(out, "w") as f:
                code = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT, cwd=WORK,
                                       env={**os.environ, "SETTLE_TOKEN": token})
            runs[who] = {"code": code, "secs": round(time.time() - start, 1), "output": out, "command": " ".join(args)}
        print(json.dumps(runs))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


main()
