"""OpenTelemetry traces sent to a real OTLP/HTTP receiver on loopback, decoded with the
protocol's own protobuf types: one span per operation with SQL children, a verification with
a span per probe, the request id as an attribute, and no secret or address anywhere."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import Verifier, verifier_on
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer
from tests.support.waiting import wait_until

USER = "traced-user@example.test"
PASSWORD = "Trace-Canary-8812"
EMAIL = "traced-canary@example.test"
CREATE = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) { ... on CreateEmailInboxSuccess { inbox { id } } }
}"""
READ = "query($id: ID!) { emailInbox(id: $id) { id status } }"


@dataclass
class Span:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    attributes: dict[str, Any]


class Receiver(ThreadingHTTPServer):
    """OTLP/HTTP's trace endpoint: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Span] = []
        self.paths: set[str] = set()

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(
                        Span(
                            span.name, span.trace_id, span.span_id, span.parent_span_id, attributes
                        )
                    )


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.paths.add(self.path)
        self.server.take(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[tuple[SmtpServer, ImapServer]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.STARTTLS, {USER: PASSWORD}, ssl_context=ctx) as smtp,
        ImapServer(ImapMode.TLS, {USER: PASSWORD}, ssl_context=ctx) as imap,
    ):
        yield smtp, imap


@pytest.fixture(scope="module")
async def traced(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: Any, receiver: Receiver
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        traces_endpoint=f"http://127.0.0.1:{receiver.server_port}/v1/traces",
        traces_export_interval_seconds=0.2,
    ) as running:
        yield running


async def test_operations_sql_and_probes_are_traced(traced: Verifier, receiver: Receiver, servers):
    smtp, imap = servers
    tenant = await traced.tenant()
    login = {"username": USER, "password": PASSWORD, "host": "127.0.0.1"}
    created = await tenant.client(
        CREATE,
        {
            "input": {
                "email": EMAIL,
                "smtp": {**login, "port": smtp.port, "security": "STARTTLS"},
                "imap": {**login, "port": imap.port, "security": "TLS"},
            }
        },
    )
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    response = await tenant.client.http.post(
        "/graphql",
        json={"query": READ, "variables": {"id": inbox_id}},
        headers={"authorization": f"Bearer {tenant.key}"},
    )
    request_id = response.headers["x-request-id"]

    def named(name: str) -> list[Span]:
        return [s for s in receiver.spans if s.name == name]

    def read_traced() -> bool:
        return any(s.attributes.get("inboxd.request_id") == request_id for s in receiver.spans)

    await wait_until(read_traced, "the read's span arrived")
    await wait_until(lambda: named("smtp login") and named("imap login"), "probe spans arrived")

    (operation,) = [
        s for s in receiver.spans if s.attributes.get("inboxd.request_id") == request_id
    ]
    assert operation.name == "query emailInbox"
    assert operation.attributes["inboxd.outcome"] == "ok"
    assert not operation.parent_span_id
    sql = [s for s in named("db.query") if s.parent_span_id == operation.span_id]
    assert sql, "the read's SQL round trips are children of its span"
    assert all(s.trace_id == operation.trace_id for s in sql)
    assert all(s.attributes["db.system"] == "postgresql" for s in sql)

    (mutation,) = named("mutation createEmailInbox")
    assert [s for s in named("db.query") if s.parent_span_id == mutation.span_id]

    verifications = {s.span_id: s for s in named("verification")}
    for side in ("smtp", "imap"):
        (probe,) = named(f"{side} login")
        assert probe.parent_span_id in verifications
        assert probe.attributes["inboxd.code"] == "OK"
        assert probe.attributes["inboxd.side"] == side
    assert receiver.paths == {"/v1/traces"}

    for span in receiver.spans:
        for key, value in span.attributes.items():
            text = str(value)
            for secret in (PASSWORD, EMAIL, USER, "127.0.0.1", tenant.key):
                assert secret not in text, (span.name, key)
