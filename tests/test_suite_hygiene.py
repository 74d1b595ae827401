"""The suite's own rules, checked on its source: no clock in a test, no fixed sleep.

On a loaded two-core machine a correct program is sometimes slow, so a test that asserts how long
something took, or sleeps and hopes, flakes. Tests wait on a condition or an event through
``tests/support/waiting.py`` (the one module that reads a clock, for its outer "this test hung"
limit) and show "within its timeout" by the outcome: the typed code, the attempt count, the
server's login count. Speed targets live in ``bench/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
WAITING = TESTS / "support" / "waiting.py"

# file (relative to tests/) -> why it may sleep. Only deliberate outages belong here: a fixed
# time during which something must stay down. Anything else waits for a condition.
SLEEP_ALLOWED: dict[str, str] = {
    "inboxd/test_hostile_documents.py": "its ticker is the measurement: how long one step of "
    "the event loop held it (issue 11 point 1 bounds it at 50 ms)",
}
# file -> why it may read a clock: a measurement the issue asks for, or a timestamp a test
# server records as an outcome (never a test timing itself).
CLOCK_ALLOWED: dict[str, str] = {
    "inboxd/test_hostile_documents.py": "measures the CPU time of the loop's thread between "
    "two ticks (issue 11 point 1), not how long a request took",
    "support/mailservers.py": "the test servers record when each login happened, so a test "
    "can check the spacing between logins as the server saw it",
    "support/processes.py": "the outer limit for a stopping Postgres to exit",
}

CLOCKS = {"monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time"}


def sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p != WAITING)


def offences(path: Path) -> tuple[list[str], list[str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    sleeps, clocks = [], []
    for node in ast.walk(tree):
        where = f"{path.relative_to(TESTS)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "sleep":
                sleeps.append(where)
            # time.time() and loop.time(): a wall or loop clock read in a test.
            if (
                name == "time"
                and isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id in ("time", "loop")
            ):
                clocks.append(where)
        if isinstance(node, ast.Attribute) and node.attr in CLOCKS:
            clocks.append(where)
        if isinstance(node, ast.alias) and node.name in CLOCKS:
            clocks.append(where)
        if isinstance(node, ast.Name) and "elapsed" in node.id.lower():
            clocks.append(where)
    return sleeps, clocks


def test_no_fixed_sleep_outside_the_allow_list():
    found = [
        where
        for path in sources()
        if str(path.relative_to(TESTS)) not in SLEEP_ALLOWED
        for where in offences(path)[0]
    ]
    assert found == [], (
        "fixed sleeps: wait for a condition with tests.support.waiting.wait_until (or, for a "
        "deliberate outage, add the file to SLEEP_ALLOWED with the reason)"
    )


def test_no_clock_reads_or_elapsed_time_assertions():
    found = [
        where
        for path in sources()
        if str(path.relative_to(TESTS)) not in CLOCK_ALLOWED
        for where in offences(path)[1]
    ]
    assert found == [], (
        "a test reads a clock: assert the outcome instead (typed code, attempt count, login "
        "count); tests.support.waiting holds the only outer timeout"
    )


def test_the_checker_sees_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import time, asyncio\n"
        "async def t():\n"
        "    started = time.monotonic()\n"
        "    await asyncio.sleep(0.2)\n"
        "    elapsed = time.time() - started\n"
        "    assert elapsed < 2\n"
    )
    original = globals()["TESTS"]
    globals()["TESTS"] = tmp_path
    try:
        sleeps, clocks = offences(sample)
    finally:
        globals()["TESTS"] = original
    assert sleeps == ["sample.py:4"]
    assert {c.split(":")[1] for c in clocks} == {"3", "5", "6"}
