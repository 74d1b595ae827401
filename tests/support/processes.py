"""The Postgres servers a test run started (pgserver's), found by their data directory."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import psutil

# Folders made by ``embedded_data_dir``; the session's last check looks in them too.
EMBEDDED_FOLDERS: list[Path] = []


def embedded_data_dir() -> Path:
    """A data folder for ``inboxd serve`` on the embedded Postgres, outside pytest's basetemp.

    Run as root, pgserver starts Postgres as a user of its own and opens the folder's parents
    to it; a pytest session starting meanwhile (another run on the same machine) makes
    ``/tmp/pytest-of-<user>`` private again, and Postgres could then not reach its folder.
    The session's end check stops what is left in these folders and removes them.
    """
    folder = Path(tempfile.mkdtemp(prefix="inboxd-pg-"))
    folder.chmod(0o755)
    EMBEDDED_FOLDERS.append(folder)
    return folder / "data"


def postgres_under(folder: Path) -> list[psutil.Process]:
    """Running Postgres postmasters whose data directory (``-D``) lies in ``folder``."""
    root = str(folder.resolve()).rstrip("/") + "/"
    found = []
    processes = list(psutil.process_iter(["name", "cmdline", "status", "ppid"]))
    postgres = {p.pid for p in processes if p.info["name"] == "postgres"}
    for process in processes:
        cmdline = process.info["cmdline"] or []
        if process.pid not in postgres or "-D" not in cmdline[:-1]:
            continue
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # exited, waiting for a parent to reap it
        if process.info["ppid"] in postgres:
            continue  # a backend just forked, before it renamed itself
        data_dir = cmdline[cmdline.index("-D") + 1]
        if (data_dir.rstrip("/") + "/").startswith(root):
            found.append(process)
    return found


def wait_postgres_gone(folder: Path, timeout: float = 30) -> list[psutil.Process]:
    """Those still running after ``timeout`` seconds (a stopping server takes a moment)."""
    deadline = time.monotonic() + timeout
    while (alive := postgres_under(folder)) and time.monotonic() < deadline:
        psutil.wait_procs(alive, timeout=0.2)  # returns as soon as they have all exited
    return alive


def stop_postgres_under(folder: Path) -> list[str]:
    """Stop (fast shutdown, then kill) what still runs in ``folder``; returns what it was."""
    left = postgres_under(folder)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.send_signal(2)  # SIGINT: Postgres's fast shutdown, clients or not
    _, alive = psutil.wait_procs(left, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return [" ".join(p.info["cmdline"]) for p in left]
