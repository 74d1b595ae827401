"""A session-wide check: no asyncio future or task ends with an exception nobody retrieved.

asyncio logs "Future exception was never retrieved" / "Task exception was never retrieved"
when such an object is garbage-collected; that is how one subscriber's cancellation, handed to
the others, once showed itself. The handler collects those records for the whole run.

One record is asyncpg's, not ours, and is set apart: a connect over TCP cancelled while
it negotiates TLS (an acquire cancelled while the pool opens a connection, or the
cancel-request connection of a cancelled query when its connection is closed) leaves
`TLSUpgradeProto.on_data` holding `ConnectionError('unexpected connection_lost() call')`,
which nobody awaits (asyncpg 0.32; upstream MagicStack/asyncpg#1310, #1211). It is matched
exactly (that type, that text, never raised), so a change on asyncpg's side shows up again.
"""

from __future__ import annotations

import gc
import logging
import traceback


def is_asyncpg_cancelled_connect(error: BaseException | None) -> bool:
    return (
        type(error) is ConnectionError
        and error.args == ("unexpected connection_lost() call",)
        and error.__traceback__ is None  # set on asyncpg's future, never raised
    )


class UnretrievedExceptions(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self.asyncpg_cancelled_connects = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "exception was never retrieved" in message:
            if record.exc_info and is_asyncpg_cancelled_connect(record.exc_info[1]):
                self.asyncpg_cancelled_connects += 1
                return
            if record.exc_info and record.exc_info[1] is not None:  # say which, and from where
                error = record.exc_info[1]
                frames = traceback.extract_tb(error.__traceback__)[-3:]
                where = "; ".join(f"{f.filename}:{f.lineno} {f.name}" for f in frames)
                message = f"{message} {error!r} at {where}"
            self.messages.append(message)

    def __enter__(self) -> UnretrievedExceptions:
        logging.getLogger("asyncio").addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.collect()  # futures log it when collected
        logging.getLogger("asyncio").removeHandler(self)
