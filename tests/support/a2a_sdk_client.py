"""The A2A SDK's own client against `settle serve` (run by tests/agents.rs in the venv of
tests/support/venv.rs, with the pinned `a2a-sdk`).

    python a2a_sdk_client.py BASE_URL TOKEN OTHER_TOKEN

1. Resolves the agent card at BASE_URL/.well-known/agent-card.json with the SDK's
   `A2ACardResolver` and verifies its signature with the SDK's own
   `create_signature_verifier`, keys from BASE_URL/.well-known/jwks.json; an edited copy
   of the card must fail that verifier.
2. With a client the SDK's `ClientFactory` makes from that card (JSON-RPC, A2A-Version
   1.0, the bearer token added by the SDK's `AuthInterceptor` from the card's security
   requirements), sends a `balance` message and reads its task back with `GetTask`.
3. With OTHER_TOKEN (another principal), `GetTask` of that task is `TaskNotFoundError`.

Prints one JSON object of what it saw; exits non-zero on any failure.
"""

import asyncio
import json
import sys

import httpx
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from jwt import PyJWK

from a2a.client import A2ACardResolver, ClientCallContext, ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor, CredentialService
from a2a.types.a2a_pb2 import GetTaskRequest, Message, Part, Role, SendMessageRequest
from a2a.utils.errors import TaskNotFoundError
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier


class Token(CredentialService):
    """The one bearer token, for whichever scheme the card names."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_credentials(self, security_scheme_name: str, context: ClientCallContext | None) -> str | None:
        return self.token


async def main(base: str, token: str, other: str) -> dict:
    seen: dict = {}
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{base}/.well-known/jwks.json")).json()
        keys = {k["kid"]: k for k in jwks["keys"]}
        verifier = create_signature_verifier(lambda kid, jku: PyJWK(keys[kid]), ["EdDSA"])
        card = await A2ACardResolver(http, base).get_agent_card(signature_verifier=verifier)
    seen["card_verified"] = True
    seen["card_name"] = card.name
    seen["security_requirements"] = [MessageToDict(r) for r in card.security_requirements]

    edited = type(card)()
    edited.CopyFrom(card)
    edited.supported_interfaces[0].url = "http://evil.example/a2a"
    try:
        verifier(edited)
        seen["edited_card_verified"] = True
    except InvalidSignaturesError:
        seen["edited_card_verified"] = False

    def client(tok: str):
        config = ClientConfig(streaming=False, httpx_client=httpx.AsyncClient())
        return ClientFactory(config).create(card, interceptors=[AuthInterceptor(Token(tok))])

    mine = client(token)
    request = SendMessageRequest(
        message=Message(
            message_id="sdk-balance-1",
            role=Role.ROLE_USER,
            parts=[Part(data=ParseDict({"balance": {"partner": "p1"}}, struct_pb2.Value()), media_type="application/json")],
        )
    )
    task = None
    async for event in mine.send_message(request):
        task = event.task
    sent = MessageToDict(task)
    seen["sent"] = sent
    got = await mine.get_task(GetTaskRequest(id=task.id))
    seen["got"] = MessageToDict(got)
    seen["got_without_history"] = MessageToDict(await mine.get_task(GetTaskRequest(id=task.id, history_length=0)))

    try:
        await client(other).get_task(GetTaskRequest(id=task.id))
        seen["other_principal"] = "found"
    except TaskNotFoundError as e:
        seen["other_principal"] = f"TaskNotFoundError: {e}"
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
