"""The session check of tests/support/unretrieved.py sees what asyncio reports. Run in a
child process: a lost exception here would (rightly) fail this run's own check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import asyncio, gc
from tests.support.unretrieved import UnretrievedExceptions

async def main():
    with UnretrievedExceptions() as found:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(RuntimeError("lost"))
        del future
        gc.collect()
    print(len(found.messages), found.messages[0] if found.messages else "")

asyncio.run(main())
"""


def test_an_exception_nobody_retrieved_is_seen() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 Future exception was never retrieved"), done.stdout


ASYNCPG_CHILD = """
import asyncio, gc
from tests.support.unretrieved import UnretrievedExceptions

async def main():
    with UnretrievedExceptions() as found:
        loop = asyncio.get_running_loop()
        for error in (
            ConnectionError("unexpected connection_lost() call"),  # asyncpg's (set apart)
            ConnectionError("unexpected connection_lost() call!"),
            ConnectionResetError("unexpected connection_lost() call"),
        ):
            future = loop.create_future()
            future.set_exception(error)
            del future
        gc.collect()
    print(found.asyncpg_cancelled_connects, len(found.messages))

asyncio.run(main())
"""


def test_only_asyncpgs_cancelled_connect_is_set_apart() -> None:
    """asyncpg's own unawaited future (upstream #1310) is counted apart, matched exactly:
    another text or another type is still reported."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", ASYNCPG_CHILD], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2"], done.stdout
