"""Background work that runs beside the API: verification workers and the event listener."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from inboxd.runtime import Resolved, open_database
from inboxd.settings import Settings
from resolvers.state import AppState


def build_state(settings: Settings, resolved: Resolved) -> AppState:
    return AppState(
        db=open_database(settings, resolved.database_url),
        keyring=resolved.keyring,
        max_page_size=settings.max_page_size,
        api_key_touch_interval=timedelta(seconds=settings.api_key_touch_interval_seconds),
    )


@dataclass(slots=True)
class Background:
    settings: Settings
    state: AppState
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def start_background(settings: Settings, resolved: Resolved, state: AppState) -> Background:
    return Background(settings, state)


async def run_worker_forever(settings: Settings, resolved: Resolved) -> None:
    state = build_state(settings, resolved)
    background = start_background(settings, resolved, state)
    await background.start()
    try:
        await asyncio.Event().wait()
    finally:
        await background.stop()
        await state.db.dispose()
