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
