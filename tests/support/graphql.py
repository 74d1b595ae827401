"""A small GraphQL-over-HTTP client for tests, speaking to the real server on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class GraphQLResponse:
    status: int
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        assert "errors" not in self.body or not self.body["errors"], self.body
        return self.body["data"]  # type: ignore[no-any-return]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.body.get("errors") or []

    def error_codes(self) -> list[str | None]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


class GraphQLClient:
    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url
        self.key = key
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    def with_key(self, key: str | None) -> GraphQLClient:
        client = GraphQLClient(self.base_url, key)
        client.http = self.http
        return client

    async def __call__(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> GraphQLResponse:
        sent = {"content-type": "application/json"}
        if self.key:
            sent["authorization"] = f"Bearer {self.key}"
        sent.update(headers or {})
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=sent
        )
        return GraphQLResponse(response.status_code, response.json())

    async def aclose(self) -> None:
        await self.http.aclose()
