"""A session-wide check: no asyncio future or task ends with an exception nobody retrieved.

asyncio logs "Future exception was never retrieved" / "Task exception was never retrieved"
when such an object is garbage-collected; that is how one subscriber's cancellation, handed to
the others, once showed itself. The handler collects those records for the whole run.
"""

from __future__ import annotations

import gc
import logging


class UnretrievedExceptions(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "exception was never retrieved" in message:
            self.messages.append(message)

    def __enter__(self) -> UnretrievedExceptions:
        logging.getLogger("asyncio").addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.collect()  # futures log it when collected
        logging.getLogger("asyncio").removeHandler(self)
