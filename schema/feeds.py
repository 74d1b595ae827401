"""Shared ``emailInboxStatus`` feeds: one read, one execution and one encoding per change.

Subscribers of the same inbox with the same document, variables and permissions share one feed,
which watches the LISTEN hub once, reads once per change, executes the selection once (the
document from ``schema.documents``, errors masked by ``schema.pipeline``) and encodes the
payload once. The general path (``schema.subscription`` through Strawberry's stream) serves
every other subscription, and whatever a feed cannot serve.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
)
from graphql.execution import Executor, execute_subscription_event
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from graphql.execution.values import get_argument_values, get_variable_values

from resolvers import inboxes
from resolvers.state import AppState
from schema.context import Context
from schema.documents import Document
from schema.pipeline import formatted
from schema.subscription import INBOX_EVENT_KINDS, read_retried
from schema.types import EmailInbox
from storage.api_keys import Principal
from storage.events import Event
from storage.listener import RESYNC, CallbackWatcher, EventHub
from storage.models import Permission
from storage.rows import InboxRow

if TYPE_CHECKING:
    from schema import InboxdSchema

SHARED_FIELD = "emailInboxStatus"
PLAN_CACHE_SIZE = 256
# The feed's first read, in its pending slot until the pump takes it.
INITIAL = object()


@dataclass(frozen=True, slots=True)
class StatusPlan:
    """A document that passed validation and whose operation subscribes to emailInboxStatus
    alone: what a feed executes for each change."""

    query: str
    operation_name: str | None
    document: DocumentNode
    operation: OperationDefinitionNode
    field: FieldNode


class FeedMember(Protocol):
    """One subscriber of a feed. Called synchronously from the feed: must not block."""

    def next(self, payload: str) -> None:
        """Send ``payload`` (the JSON text of a ``next`` message's payload)."""

    def complete(self) -> None:
        """The subscription ended (the inbox was deleted, or the feed failed)."""

    def fallback(
        self, query: str, operation_name: str | None, variables: dict[str, Any] | None
    ) -> None:
        """Serve this subscription the general way: the feed could not start (no such inbox,
        the database unreachable), and the general path reports that exactly as usual."""


FeedKey = tuple[uuid.UUID, uuid.UUID, str, str | None, bytes, frozenset[str]]


class StatusFeed:
    """One emailInboxStatus document followed for a group of subscribers.

    Registered with the hub before its first read, like a single subscription. Events only
    mark work pending; one short-lived pump task per feed (none while idle) reads, executes
    and encodes, then hands the payload to every member. Events that arrive while it works
    coalesce into one re-read: members get the latest state, never a stale one.
    """

    __slots__ = (
        "_feeds",
        "_watcher",
        "inbox_id",
        "key",
        "members",
        "payload",
        "pending",
        "plan",
        "principal",
        "task",
        "variables",
        "version",
    )

    def __init__(
        self,
        feeds: StatusFeeds,
        key: FeedKey,
        plan: StatusPlan,
        principal: Principal,
        inbox_id: uuid.UUID,
        variables: dict[str, Any] | None,
        hub: EventHub,
    ) -> None:
        self._feeds = feeds
        self.key = key
        self.plan = plan
        self.principal = principal
        self.inbox_id = inbox_id
        self.variables = variables
        # Insertion-ordered set: the first to join hears first.
        self.members: dict[FeedMember, None] = {}
        self.payload: str | None = None
        self.version: int | None = None
        self.pending: object | None = INITIAL
        self.task: asyncio.Task[None] | None = None
        self._watcher: CallbackWatcher | None = hub.add(
            principal.workspace_id, self._accepts, self._offer
        )
        self._wake()

    def join(self, member: FeedMember) -> None:
        self.members[member] = None
        if self.payload is not None:
            # Current as of the last change this feed has processed; any later change is
            # pending in the feed and reaches this member too.
            member.next(self.payload)

    def leave(self, member: FeedMember) -> None:
        self.members.pop(member, None)
        if not self.members:
            self._close()

    def _accepts(self, event: Event) -> bool:
        return event.inbox_id == self.inbox_id and event.kind in INBOX_EVENT_KINDS

    def _offer(self, item: object) -> None:
        pending = self.pending
        if isinstance(item, Event):
            if pending is None or (isinstance(pending, Event) and item.version > pending.version):
                self.pending = item
        elif pending is not INITIAL:
            self.pending = RESYNC
        self._wake()

    def _wake(self) -> None:
        if self.task is None and self._watcher is not None:
            self.task = asyncio.create_task(self._pump(), name="inboxd-status-feed")

    def _close(self) -> None:
        if self._watcher is not None:
            self._feeds.forget(self, self._watcher)
            self._watcher = None
        # A running pump is left to finish its read: reads are shared with other feeds
        # (inboxes.read_shared), and cancelling one would fail them all.
        self.members.clear()

    async def _pump(self) -> None:
        try:
            while self.pending is not None and self.members and self._watcher is not None:
                item, self.pending = self.pending, None
                try:
                    row = await self._read(item)
                    if row is None:
                        self._end()
                        return
                    if row.version == self.version:
                        continue
                    payload = await self._feeds.execute(self, row)
                except Exception as exc:  # the database stayed away, or a bug: end cleanly
                    self._fail(exc)
                    return
                self.version, self.payload = row.version, payload
                for member in list(self.members):
                    member.next(payload)
        finally:
            self.task = None

    async def _read(self, item: object) -> InboxRow | None:
        state = self._feeds.state
        if item is INITIAL:  # as the general path: its first read is not retried
            return await inboxes.get_inbox(state, self.principal, str(self.inbox_id))
        if isinstance(item, Event):
            return await read_retried(
                partial(inboxes.read_shared, state, self.principal, self.inbox_id, item.version)
            )
        # RESYNC: events may have been missed, read the current state
        return await read_retried(
            partial(inboxes.get_inbox, state, self.principal, str(self.inbox_id))
        )

    def _end(self) -> None:
        members = list(self.members)
        never_served = self.payload is None
        self._close()
        for member in members:
            if never_served:  # no such inbox (for this workspace): the general path says so
                member.fallback(self.plan.query, self.plan.operation_name, self.variables)
            else:  # deleted
                member.complete()

    def _fail(self, exc: Exception) -> None:
        members = list(self.members)
        never_served = self.payload is None
        self._close()
        if never_served:
            for member in members:
                member.fallback(self.plan.query, self.plan.operation_name, self.variables)
            return
        # As the general path ends a subscription whose read raised: one error, then complete.
        context = self._feeds.context(self.principal)
        error = GraphQLError(str(exc), original_error=exc)
        payload = orjson.dumps(
            {"data": None, "errors": self._feeds.formatted([error], context)}
        ).decode()
        for member in members:
            member.next(payload)
            member.complete()


class StatusFeeds:
    """The process's emailInboxStatus feeds, keyed by (workspace, inbox, document, variables,
    permissions): members of one feed would get byte-identical payloads."""

    def __init__(self, schema: InboxdSchema, state: AppState) -> None:
        self.state = state
        self.documents = schema.documents
        self.graphql_schema = schema.graphql_schema()
        self._plans: dict[tuple[str, str | None], StatusPlan | None] = {}
        self._feeds: dict[FeedKey, StatusFeed] = {}

    def following(self, inbox_id: uuid.UUID) -> list[StatusFeed]:
        """The open feeds of one inbox."""
        return [feed for feed in self._feeds.values() if feed.inbox_id == inbox_id]

    def plan(self, document: Document, operation_name: str | None) -> StatusPlan | None:
        """The plan for a prepared document, if a feed can serve it; None: the general path."""
        cache_key = (document.query, operation_name)
        try:
            return self._plans[cache_key]
        except KeyError:
            pass
        plan = self._compile(document, operation_name)
        if len(self._plans) >= PLAN_CACHE_SIZE:
            del self._plans[next(iter(self._plans))]
        self._plans[cache_key] = plan
        return plan

    def _compile(self, document: Document, operation_name: str | None) -> StatusPlan | None:
        if not document.valid:
            return None  # the general path reports why
        operation, _ = self.documents.operation(document, operation_name)
        if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
            return None
        selections = operation.selection_set.selections
        if len(selections) != 1:
            return None
        field = selections[0]
        if not isinstance(field, FieldNode) or field.directives or field.name.value != SHARED_FIELD:
            return None
        assert document.node is not None
        return StatusPlan(document.query, operation_name, document.node, operation, field)

    def join(
        self,
        plan: StatusPlan,
        principal: Principal,
        variables: dict[str, Any] | None,
        member: FeedMember,
    ) -> StatusFeed | None:
        """Add ``member`` to its feed (made on first use); None: serve it the general way
        (a refused permission, bad variables or id: the general path reports them)."""
        hub = self.state.hub
        if hub is None or not principal.can(Permission.VIEW_EMAIL_INBOX):
            return None
        values = get_variable_values(
            self.graphql_schema, plan.operation.variable_definitions or (), variables or {}
        )
        if isinstance(values, list):  # errors
            return None
        subscription = self.graphql_schema.subscription_type
        assert subscription is not None  # the plan's field validated against it
        arguments = get_argument_values(subscription.fields[SHARED_FIELD], plan.field, values)
        try:
            inbox_id = uuid.UUID(str(arguments["id"]))
        except (KeyError, ValueError):
            return None
        key: FeedKey = (
            principal.workspace_id,
            inbox_id,
            plan.query,
            plan.operation_name,
            orjson.dumps(values.coerced, option=orjson.OPT_SORT_KEYS, default=str),
            principal.permissions,
        )
        feed = self._feeds.get(key)
        if feed is None:
            feed = StatusFeed(self, key, plan, principal, inbox_id, variables, hub)
            self._feeds[key] = feed
        feed.join(member)
        return feed

    def forget(self, feed: StatusFeed, watcher: CallbackWatcher) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        if self.state.hub is not None:
            self.state.hub.remove(watcher)

    def context(self, principal: Principal) -> Context:
        # A fresh context per change: its DataLoaders must not serve the previous state.
        return Context(state=self.state, principal=principal, request_id=uuid.uuid4().hex)

    def _executor(
        self, plan: StatusPlan, context: Context | None, variables: dict[str, Any] | None
    ) -> list[GraphQLError] | Executor[Any]:
        return ExecutorThrowingOnIncremental.build(
            self.graphql_schema,
            plan.document,
            None,
            context,
            variables,
            plan.operation_name,
        )

    async def execute(self, feed: StatusFeed, row: InboxRow) -> str:
        """The payload of a ``next`` message for ``row``, as JSON text, exactly as Strawberry's
        subscription path would build it (the root value is what the resolver yields)."""
        context = self.context(feed.principal)
        executor = self._executor(feed.plan, context, feed.variables)
        if isinstance(executor, list):  # cannot happen: the same variables were coerced
            raise executor[0]
        result = execute_subscription_event(
            executor.build_per_event_executor(EmailInbox.from_row(row))
        )
        if executor.is_awaitable(result):
            result = await cast(Awaitable[ExecutionResult], result)
        result = cast(ExecutionResult, result)
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = self.formatted(result.errors, context)
        return orjson.dumps(payload).decode()

    def formatted(self, errors: list[GraphQLError], context: Context) -> list[Any]:
        """Errors as the client sees them, masked as every operation's are."""
        return formatted(errors, context.request_id)
