#!/usr/bin/env python3
"""The two commands, on a machine with only Python 3.11+:

    python3 dev.py run     # start inboxd (embedded Postgres unless INBOXD_DATABASE_URL is set)
    python3 dev.py test    # run the whole test suite

Both create ./.venv and install the project with its dev extra on first use (and again whenever
pyproject.toml changes), then hand over to the installed program. Extra arguments pass through.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".inboxd-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"inboxd needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing inboxd and its dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def main() -> int:
    commands = {
        "run": [str(BIN / "inboxd"), "serve"],
        "test": [str(BIN / "python"), "-m", "pytest"],
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_environment()
    argv = commands[sys.argv[1]] + sys.argv[2:]
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
