"""The official MCP Python SDK's client against `settle serve` (run by tests/agents.rs in the
venv of tests/support/venv.rs, with the pinned `mcp`).

    python mcp_sdk_client.py MCP_URL VENDOR_TOKEN PARTNER_P1_TOKEN

Connects over streamable HTTP with a bearer token, lists the tools, and calls every one
of them (the store holds program `growth` with partners p1 and p2). The SDK's client
checks each successful answer's structured content against the tool's declared output
schema, and raises if it does not conform; a refusal must be a tool error whose
structured content is an RFC 9457 problem.

Prints one JSON object of what it saw; exits non-zero on any failure.
"""

import asyncio
import json
import sys
import time

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def session(url: str, token: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return http, streamable_http_client(url, http_client=http)


async def with_session(url: str, token: str, body):
    http, transport = session(url, token)
    async with http, transport as (read, write, *_):
        async with ClientSession(read, write) as s:
            await s.initialize()
            return await body(s)


def problem(result) -> dict:
    """The problem of a tool error (asserting it is one)."""
    assert result.is_error, f"expected a tool error, got {result}"
    p = result.structured_content
    assert isinstance(p, dict) and {"type", "title", "status", "detail"} <= p.keys(), f"not a problem: {result}"
    return p


async def vendor(s: ClientSession) -> dict:
    seen: dict = {}
    tools = (await s.list_tools()).tools
    seen["tools"] = sorted(t.name for t in tools)
    seen["without_output_schema"] = sorted(t.name for t in tools if not t.output_schema)

    async def ok(name: str, args: dict) -> dict:
        # call_tool validates structured content against the tool's output schema.
        r = await s.call_tool(name, args)
        assert not r.is_error, f"{name} {args} failed: {r}"
        assert isinstance(r.structured_content, dict), f"{name}: no structured content: {r}"
        seen.setdefault("answered", []).append(name)
        return r.structured_content

    lead = await ok("register_lead", {"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"})
    seen["lead_outcome"] = lead["outcome"]
    await ok("hand_off_lead", {"lead": "l1", "from": "p1", "to": "p2"})
    conv = await ok("record_conversion", {"conversion": "d1", "lead": "l1", "revenue": "1000.00", "currency": "USD"})
    seen["conversion_mandates"] = [m["mandate_id"] for m in conv["mandates"]]
    seen["balance"] = await ok("get_balance", {"partner": "p2"})
    chain = await ok("get_conversion", {"conversion": "d1"})
    seen["chain"] = [[h["partner"], h["role"], h["amount"]["amount"]] for h in chain["hops"]]
    seen["leads"] = [[l["lead"], l["chain"], l["status"]] for l in (await ok("list_leads", {"partner": "p1"}))["leads"]]
    page = await ok("list_mandates", {"partner": "p2", "limit": 1})
    seen["listed"] = [m["mandate_id"] for m in page["mandates"]]
    mid = conv["mandates"][-1]["mandate_id"]
    deadline = time.monotonic() + 15
    while True:
        r = await s.call_tool("get_receipt", {"partner": "p2", "mandate_id": mid})
        if not r.is_error:
            receipt = r.structured_content
            seen.setdefault("answered", []).append("get_receipt")
            break
        assert problem(r)["status"] == 409 and time.monotonic() < deadline, f"no receipt: {r}"
        await asyncio.sleep(0.2)
    seen["verdict"] = await ok("verify_receipt", {"receipt": receipt})
    seen["forged_verdict"] = await ok("verify_receipt", {"receipt": {**receipt, "inclusion": []}})
    cp = await ok("get_checkpoint", {})
    seen["consistency"] = (await ok("get_checkpoint", {"since_size": 1}))["consistency"]["from"]
    seen["checkpoint_size"] = cp["size"]
    seen["program"] = (await ok("describe_program", {"program": "growth"}))["program"]
    # A dispute on p2's behalf: commented, listed, accepted as a re-split from p1 to p2
    # (two signed adjustment mandates); another opened and withdrawn.
    subject = {"kind": "conversion", "conversion": "d1"}
    await ok("open_dispute", {"dispute": "ds1", "partner": "p2", "subject": subject, "claimed": "5.00",
                              "statement": "the closer's share is too small", "evidence": [mid]})
    await ok("comment_on_dispute", {"dispute": "ds1", "text": "checking the rule version"})
    seen["disputes_listed"] = [d["dispute"] for d in (await ok("list_disputes", {"status": "open"}))["disputes"]]
    resolution = {"outcome": "accepted", "reason": "agreed",
                  "adjustments": [{"partner": "p2", "amount": "5.00"}, {"partner": "p1", "amount": "-5.00"}]}
    resolved = await ok("resolve_dispute", {"dispute": "ds1", "resolution": resolution})
    seen["adjustments"] = [[m["direction"], m["partner"], m["amount"]["amount"]] for m in resolved["mandates"]]
    dispute = await ok("get_dispute", {"dispute": "ds1"})
    seen["dispute"] = {"status": dispute["status"], "comments": len(dispute["comments"]),
                       "adjusted": [a["amount"] for a in dispute["adjustments"]]}
    await ok("open_dispute", {"dispute": "ds2", "partner": "p1", "subject": subject, "statement": "duplicate claim"})
    await ok("withdraw_dispute", {"dispute": "ds2", "reason": "opened twice"})
    # An adjustment beyond the claim is refused (422), and changes nothing.
    await ok("open_dispute", {"dispute": "ds3", "partner": "p2", "subject": subject, "claimed": "1.00",
                              "statement": "one more dollar"})
    more = {"outcome": "accepted", "reason": "", "adjustments": [{"partner": "p2", "amount": "2.00"}]}
    seen["too_much"] = problem(await s.call_tool("resolve_dispute", {"dispute": "ds3", "resolution": more}))
    refund = await ok("record_refund", {"refund": "r1", "conversion": "d1", "full": True})
    seen["refund_directions"] = [m["direction"] for m in refund["mandates"]]

    # Argument errors and rule refusals: tool errors carrying the problem HTTP answers.
    seen["missing_field"] = problem(await s.call_tool("get_balance", {}))
    seen["unknown_field"] = problem(await s.call_tool("get_balance", {"partner": "p2", "color": "red"}))
    seen["wrong_type"] = problem(await s.call_tool("list_mandates", {"partner": "p2", "limit": "ten"}))
    seen["limit_zero"] = problem(await s.call_tool("list_mandates", {"partner": "p2", "limit": 0}))
    return seen


async def partner(s: ClientSession) -> dict:
    # A duplicate registration answers with no owner for a partner (null, per the schema).
    r = await s.call_tool("register_lead", {"lead": "l9", "program": "growth", "customer": "acme.example", "partner": "p1"})
    assert not r.is_error, f"register_lead as p1 failed: {r}"
    return {
        "duplicate": r.structured_content["outcome"],
        "other_partner": problem(await s.call_tool("get_balance", {"partner": "p2"})),
        # p2's dispute is not found for p1, though p1 is on its conversion.
        "other_dispute": problem(await s.call_tool("get_dispute", {"dispute": "ds1"})),
        "own_disputes": [d["dispute"] for d in (await s.call_tool("list_disputes", {})).structured_content["disputes"]],
    }


async def main(url: str, vendor_token: str, partner_token: str) -> dict:
    seen = await with_session(url, vendor_token, vendor)
    seen["partner"] = await with_session(url, partner_token, partner)
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
