"""/metrics read from a real inboxd after real operations: the counts move, exactly once per
operation, and no label value ever comes from what a client sent."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from inboxd import metrics
from inboxd.app import create_app
from inboxd.runtime import ConfigurationError
from inboxd.settings import Settings
from mail.presets import Provider
from mail.results import ProbeCode
from schema import build_schema
from schema.pipeline import OUTCOMES
from tests.conftest import Verifier, verifier_on
from tests.support.dnsserver import DnsTestServer
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer
from tests.support.waiting import wait_until
from tests.support.ws import WSClient

TOKEN = "metrics-token-7Hq2"
USER = "metrics-user@example.test"
PASSWORD = "Metrics-Canary-5521"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

READ = "query($id: ID!) { emailInbox(id: $id) { id email status } }"
CREATE = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) {
    __typename
    ... on CreateEmailInboxSuccess { inbox { id status } }
    ... on UserError { code message }
  }
}"""
STATUS = "subscription($id: ID!) { emailInboxStatus(id: $id) { id status } }"


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[tuple[SmtpServer, ImapServer]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.STARTTLS, {USER: PASSWORD}, ssl_context=ctx) as smtp,
        ImapServer(ImapMode.TLS, {USER: PASSWORD}, ssl_context=ctx) as imap,
    ):
        yield smtp, imap


@pytest.fixture(scope="module")
async def watched(
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: Any,
    dns_server: DnsTestServer,
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        dns=dns_server,
        metrics_enabled=True,
        metrics_token=TOKEN,
        rate_limit_requests_per_minute=40,
    ) as running:
        yield running


async def scrape_text(base_url: str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        return await http.get("/metrics", headers=headers)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(verifier: Verifier) -> Samples:
    response = await scrape_text(verifier.stack.base_url)
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def inbox_input(servers: tuple[SmtpServer, ImapServer], email: str, **extra: Any) -> dict:
    smtp, imap = servers
    return {
        "email": email,
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "STARTTLS",
                 "username": USER, "password": extra.pop("password", PASSWORD)},
        "imap": {"host": "127.0.0.1", "port": imap.port, "security": "TLS",
                 "username": USER, "password": PASSWORD},
        **extra,
    }  # fmt: skip


async def test_metrics_need_the_bearer_token(watched: Verifier):
    assert (await scrape_text(watched.stack.base_url, None)).status_code == 401
    assert (await scrape_text(watched.stack.base_url, "wrong")).status_code == 401
    response = await scrape_text(watched.stack.base_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")


async def test_metrics_are_off_unless_enabled(base_url: str):
    # The session's server runs with the default settings.
    assert (await scrape_text(base_url)).status_code == 404


def test_metrics_on_the_api_port_need_a_token_or_a_port_of_their_own(settings: Settings):
    with pytest.raises(ConfigurationError, match="INBOXD_METRICS_TOKEN"):
        create_app(settings.model_copy(update={"metrics_enabled": True}), None)  # type: ignore[arg-type]


async def test_each_operation_is_counted_once_whichever_way_it_runs(watched: Verifier, servers):
    tenant = await watched.tenant()
    before = await scrape(watched)
    # A mutation runs through Strawberry's execute and the Pipeline extension; a cached
    # compiled query through the plan's shortcut before it.
    created = await tenant.client(CREATE, {"input": inbox_input(servers, "count@example.test")})
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    for _ in range(3):
        assert (await tenant.client(READ, {"id": inbox_id})).data["emailInbox"]["id"] == inbox_id
    invalid = await tenant.client("{ emailInbox(id: 1) { nope } }")
    assert invalid.errors
    unauthenticated = await watched.anonymous(READ, {"id": inbox_id})
    assert unauthenticated.error_codes() == ["UNAUTHENTICATED"]
    after = await scrape(watched)

    ops = "inboxd_graphql_operations_total"
    assert moved(before, after, ops, type="query", field="emailInbox", outcome="ok") == 3
    assert moved(before, after, ops, type="query", field="emailInbox", outcome="error") == 1
    assert moved(before, after, ops, type="query", field="other", outcome="error") == 1
    assert moved(before, after, ops, type="mutation", field="createEmailInbox", outcome="ok") == 1
    seconds = "inboxd_graphql_operation_duration_seconds_count"
    assert moved(before, after, seconds, type="query", field="emailInbox") == 4
    assert moved(before, after, seconds, type="mutation", field="createEmailInbox") == 1
    assert moved(before, after, "inboxd_http_responses_total", status="2xx") >= 5


async def test_websocket_operations_and_subscriptions(watched: Verifier, servers):
    tenant = await watched.tenant()
    created = await tenant.client(CREATE, {"input": inbox_input(servers, "ws@example.test")})
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    before = await scrape(watched)
    ws = await WSClient.connect(watched.stack.base_url, tenant.key)
    try:
        status = await ws.subscribe(STATUS, {"id": inbox_id})
        await ws.next_payload(status)
        query = await ws.subscribe(READ, {"id": inbox_id})
        assert (await ws.next_payload(query))["type"] == "next"
        during = await scrape(watched)
    finally:
        await ws.close()
    ops = "inboxd_graphql_operations_total"
    assert moved(before, during, ops, type="subscription", field="emailInboxStatus", outcome="ok")
    assert moved(before, during, ops, type="query", field="emailInbox", outcome="ok") == 1
    assert value(during, "inboxd_ws_connections") >= 1
    assert value(during, "inboxd_ws_subscriptions", field="emailInboxStatus") >= 1

    async def gone() -> bool:
        return value(await scrape(watched), "inboxd_ws_connections") < value(
            during, "inboxd_ws_connections"
        )

    await wait_until(gone, "the websocket is no longer counted")


async def test_verification_outcomes_probes_and_job_lag(watched: Verifier, servers):
    tenant = await watched.tenant()
    before = await scrape(watched)
    for email, password in (("good@example.test", PASSWORD), ("bad@example.test", "wrong-pw")):
        created = await tenant.client(
            CREATE, {"input": inbox_input(servers, email, password=password, provider="GMAIL")}
        )
        assert created.data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess"

    async def finished() -> bool:
        done = await scrape(watched)
        return moved(before, done, "inboxd_verification_attempts_total", result="failed") >= 1 and (
            moved(before, done, "inboxd_verification_attempts_total", result="passed") >= 1
        )

    await wait_until(finished, "both verifications finished")
    after = await scrape(watched)
    probes = "inboxd_verification_probes_total"
    assert moved(before, after, probes, side="smtp", code="OK", provider="GMAIL") == 1
    assert moved(before, after, probes, side="imap", code="OK", provider="GMAIL") == 2
    assert moved(before, after, probes, side="smtp", code="AUTH_FAILED", provider="GMAIL") == 1
    duration = "inboxd_verification_probe_duration_seconds_count"
    assert moved(before, after, duration, side="smtp") == 2
    assert moved(before, after, "inboxd_verification_start_lag_seconds_count") >= 2
    for state in ("queued", "running", "due", "overdue"):
        assert ("inboxd_verification_jobs", frozenset({("state", state)})) in after
    assert value(after, "inboxd_verification_oldest_due_seconds") >= 0


async def test_pool_and_listener_gauges(watched: Verifier):
    samples = await scrape(watched)
    assert value(samples, "inboxd_db_pool_max_connections", pool="api") == 5
    assert value(samples, "inboxd_db_pool_connections", pool="api", state="idle") >= 1
    assert value(samples, "inboxd_db_pool_acquire_duration_seconds_count", pool="api") > 0
    assert value(samples, "inboxd_db_pool_acquire_duration_seconds_count", pool="background")
    assert value(samples, "inboxd_listener_connected") == 1
    assert ("inboxd_listener_reconnects_total", frozenset()) in samples


async def test_rate_limit_refusals_are_counted(watched: Verifier):
    tenant = await watched.tenant()
    before = await scrape(watched)
    answers = [await tenant.client("{ viewer { inboxUsage } }") for _ in range(45)]
    refused = sum(1 for a in answers if a.status == 429)
    assert refused >= 1
    after = await scrape(watched)
    assert moved(before, after, "inboxd_rate_limited_requests_total", per="key") == refused
    assert moved(before, after, "inboxd_http_responses_total", status="4xx") >= refused


HOSTILE = "evil-canary"


async def test_no_label_value_comes_from_what_a_client_sent(watched: Verifier, servers):
    tenant = await watched.tenant()
    http = tenant.client.http
    headers = {"authorization": f"Bearer {tenant.key}"}
    for name in (f"{HOSTILE}@example.test", f"{HOSTILE}.example.test", f"{HOSTILE}\nx"):
        await http.post(
            "/graphql",
            json={
                "query": f"query {HOSTILE}_op {{ viewer {{ inboxUsage }} }}",
                "operationName": name,
            },
            headers=headers,
        )
        await http.post(
            "/graphql", json={"query": f"{{ {HOSTILE}: viewer {{ inboxUsage }} }}"}, headers=headers
        )
        await http.post("/graphql", json={"query": f"{{ {HOSTILE} }}"}, headers=headers)
    hostile = inbox_input(servers, f"{HOSTILE}@{HOSTILE}-host.example.test")
    hostile["smtp"]["host"] = f"smtp.{HOSTILE}-host.example.test"
    hostile["imap"]["host"] = f"imap.{HOSTILE}-host.example.test"
    hostile["name"] = f"{HOSTILE} name"
    hostile["tags"] = [HOSTILE]
    before = await scrape(watched)
    created = await tenant.client(CREATE, {"input": hostile})
    assert created.data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess"

    async def verified() -> bool:  # its verification ran (and failed: no such host)
        after = await scrape(watched)
        attempts = "inboxd_verification_attempts_total"
        return any(moved(before, after, attempts, result=r) for r in ("failed", "retrying"))

    await wait_until(verified, "the hostile inbox's verification ran")
    text = (await scrape_text(watched.stack.base_url)).text
    for secret in (HOSTILE, PASSWORD, TOKEN, USER, tenant.key, str(tenant.workspace.id)):
        assert secret not in text
    unknown = {
        (family.name, label, found)
        for family in text_string_to_metric_families(text)
        if family.name.startswith("inboxd_")
        for sample in family.samples
        for label, found in sample.labels.items()
        if found not in KNOWN.get(label, ())
    }
    assert unknown == set()  # fmt: skip


def _known_label_values() -> dict[str, frozenset[str]]:
    schema = build_schema().graphql_schema()
    fields = {
        name
        for root in (schema.query_type, schema.mutation_type, schema.subscription_type)
        if root is not None
        for name in root.fields
    }
    bounds = (
        *metrics.OPERATION_BUCKETS,
        *metrics.LAG_BUCKETS,
        *metrics.PROBE_BUCKETS,
        *metrics.POOL_BUCKETS,
    )
    buckets = {*(floatToGoString(b) for b in bounds), "+Inf"}
    return {
        "type": frozenset(metrics.OPERATION_TYPES),
        "field": frozenset({*fields, "other"}),
        "outcome": frozenset(OUTCOMES),
        "status": frozenset(metrics.STATUS_CLASSES),
        "per": frozenset({"key", "address"}),
        "result": frozenset({"passed", "failed", "retrying", "crashed"}),
        "side": frozenset(metrics.SIDES),
        "code": frozenset({*(c.value for c in ProbeCode), "other"}),
        "provider": frozenset({*(p.value for p in Provider), "other"}),
        "pool": frozenset(metrics.POOLS),
        "state": frozenset({"queued", "running", "due", "overdue", "busy", "idle"}),
        "le": frozenset(buckets),
    }


KNOWN = _known_label_values()


async def test_metrics_on_a_port_of_their_own_need_no_token(pg_server, certs, keyring):
    async with verifier_on(
        pg_server[0], certs, keyring, worker=False, metrics_enabled=True, metrics_port=0
    ) as running:
        port = running.stack.app.state.metrics.port
        assert (await scrape_text(running.stack.base_url)).status_code == 404
        response = await scrape_text(f"http://127.0.0.1:{port}", None)
        assert response.status_code == 200
        samples = parse(response.text)
        assert value(samples, "inboxd_listener_connected") == 1


DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_the_dashboard_and_the_alerts_read_metrics_inboxd_exposes(watched: Verifier):
    text = (await scrape_text(watched.stack.base_url)).text
    families = list(text_string_to_metric_families(text))
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    alerts = (DOCS / "operations.md").read_text().split("## The five alerts worth having")[1]
    for source in ((DOCS / "grafana-inboxd.json").read_text(), alerts.split("## Dashboard")[0]):
        read = set(re.findall(r"\binboxd_[a-z_]+", source))
        assert read, source[:200]
        assert read <= exposed, read - exposed
