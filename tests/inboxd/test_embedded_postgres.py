"""``inboxd serve`` on the embedded Postgres stops that Postgres however it is stopped
(SIGTERM, SIGINT), and recovers from the handle file a killed run leaves behind."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.inboxd.test_cli import Served, base_env
from tests.support.processes import embedded_data_dir, postgres_under, wait_postgres_gone

pytestmark = pytest.mark.slow


@contextmanager
def serving(data: Path) -> Iterator[Served]:
    served = Served(base_env(INBOXD_DATA_DIR=str(data)))
    try:
        assert len(postgres_under(data)) == 1, served.output
        yield served
    finally:
        if served.proc.poll() is None:  # the test failed before stopping it
            served.proc.kill()
            served.proc.communicate(timeout=30)


def stop(served: Served, signum: int) -> int:
    served.proc.send_signal(signum)
    served.proc.communicate(timeout=60)
    return served.proc.returncode


def handles(data: Path) -> list[int]:
    """pgserver's list of the processes using the server."""
    return list(json.loads((data / "postgres" / ".handle_pids.json").read_text()))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_serve_stops_its_postgres(signum: int):
    data = embedded_data_dir()
    with serving(data) as served:
        assert stop(served, signum) == 128 + signum  # stopped by the signal, and says so
    assert wait_postgres_gone(data) == []
    assert handles(data) == []


def test_a_killed_runs_handle_file_is_recovered_from():
    data = embedded_data_dir()
    with serving(data) as killed:
        killed.proc.kill()  # SIGKILL: nothing runs, its entry stays in the handle file
        killed.proc.communicate(timeout=30)
    assert handles(data) == [killed.proc.pid]
    assert len(postgres_under(data)) == 1  # orphaned, still running

    with serving(data) as again:  # takes the orphan over
        assert handles(data) == [again.proc.pid]
        assert stop(again, signal.SIGINT) == 128 + signal.SIGINT
    assert wait_postgres_gone(data) == []
