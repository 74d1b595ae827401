"""Judge named mutmut mutants against a fast test selection, one fresh pytest each.

mutmut runs every test that covers a mutant; for functions nearly every test reaches
(``storage.inboxes.create_inbox``, ``storage.job_runs.claim_tests``, ``record_outcome``) that is
4 to 6 minutes a mutant on the shared machine. This runs, in ``mutants/`` (made by
``--generate`` or ``mutmut run``), ``MUTANT_UNDER_TEST=NAME python -m pytest -x -q TESTS``
under an outer time limit: exit 0 is "survived", a time-out is "timeout" (counted as killed,
the mutant made a test hang), anything else "killed". The mutant is active from the first
import, so statements built at import see it too (docs/testing.md, "Mutation testing").

    python tools/mutants_by_hand.py --in-process --out /tmp/verdicts.jsonl \
        --tests tests/storage/test_job_runs.py tests/storage/test_job_queue.py \
        --functions storage.job_runs.claim_tests storage.job_runs.record_outcome

``--in-process`` runs one pytest session per mutant in a single interpreter (5 to 10 s a
killed mutant instead of 12 to 40 s on the loaded machine); only for functions nothing
calls at import. Without it, each mutant gets a fresh interpreter.

``--generate`` (alone) makes ``mutants/`` as ``mutmut run`` would, and stops there: its coverage
pass runs the whole selection once (4 minutes), no mutant is run.
Verdicts are appended as JSON lines; a rerun skips the names already judged (resumable).
The database comes from INBOXD_TEST_DATABASE_URL, as for the suite.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

MUTANTS = Path("mutants")


def mutant_names(function: str) -> list[str]:
    """Every mutant mutmut generated for ``module.function`` (``storage.job_runs.claim_tests``)."""
    module, _, name = function.rpartition(".")
    source = (MUTANTS / (module.replace(".", "/") + ".py")).read_text()
    numbers = {
        int(n) for n in re.findall(rf"^\s*(?:async )?def x_{name}__mutmut_(\d+)\(", source, re.M)
    }
    return [f"{module}.x_{name}__mutmut_{n}" for n in sorted(numbers)]


def judge(name: str, tests: list[str], limit: float, extra: list[str]) -> dict[str, object]:
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "pythonpath=.", *extra, *tests]
    try:
        done = subprocess.run(
            command,
            cwd=MUTANTS,
            env={**os.environ, "MUTANT_UNDER_TEST": name},
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        verdict, failed = "timeout", ""
    else:
        verdict = "survived" if done.returncode == 0 else "killed"
        lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        failed = (
            lines[0] if lines else "" if done.returncode == 0 else f"exit {done.returncode}: {tail}"
        )
    return {
        "name": name,
        "verdict": verdict,
        "seconds": round(time.monotonic() - started, 1),
        "failed": failed,
        "tests": tests,
    }


class _Failures:
    """A pytest plugin noting the first failed test of a session."""

    def __init__(self) -> None:
        self.failed = ""

    def pytest_runtest_logreport(self, report: object) -> None:
        if getattr(report, "failed", False) and not self.failed:
            self.failed = f"FAILED {getattr(report, 'nodeid', '')}"

    def pytest_collectreport(self, report: object) -> None:
        self.pytest_runtest_logreport(report)


def judge_in_process(todo: list[str], args: argparse.Namespace) -> None:
    """Run pytest once per mutant in this one process (``--in-process``): no interpreter start
    and imports per mutant. Only for mutants of functions nothing calls at import (the
    mutant is switched between sessions, after the first import). A mutant that hangs makes
    faulthandler end the process; the parent records it as a time-out and starts another."""
    import pytest

    os.chdir(MUTANTS)
    with args.out.open("a") as out:
        for name in todo:
            args.progress.write_text(name)
            os.environ["MUTANT_UNDER_TEST"] = name
            failures = _Failures()
            started = time.monotonic()
            faulthandler.dump_traceback_later(args.limit, exit=True)
            code = pytest.main(
                [
                    "-x",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "pythonpath=.",
                    *args.pytest_arg,
                    *args.tests,
                ],
                plugins=[failures],
            )
            faulthandler.cancel_dump_traceback_later()
            verdict = "survived" if code == 0 else "killed"
            failed = failures.failed or ("" if code == 0 else f"exit {int(code)}")
            result = {
                "name": name,
                "verdict": verdict,
                "seconds": round(time.monotonic() - started, 1),
                "failed": failed,
                "tests": args.tests,
                "in_process": True,
            }
            out.write(json.dumps(result) + "\n")
            out.flush()
            print(f"{name} {verdict} {result['seconds']}s", file=sys.stderr, flush=True)


def generate() -> None:
    """What ``mutmut run`` does before its clean run (copy the sources into ``mutants/``, its
    coverage pass over the selection, the mutants), and nothing after it."""
    from mutmut import __main__ as steps
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils import file_utils

    set_mutant_under_test("mutant_generation")
    MUTANTS.mkdir(exist_ok=True)
    file_utils.copy_src_dir()
    file_utils.copy_also_copy_files()
    file_utils.setup_source_paths()
    steps.store_lines_covered_by_tests()
    print(steps.create_mutants(1))


def main() -> None:
    if sys.argv[1:] == ["--generate"]:
        generate()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tests", nargs="+", required=True)
    parser.add_argument("--functions", nargs="*", default=[])
    parser.add_argument("--names", nargs="*", default=[], help="mutant names, module.x_f__mutmut_N")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before a time-out")
    parser.add_argument("--pytest-arg", action="append", default=[])
    parser.add_argument(
        "--in-process", action="store_true", help="one interpreter for many mutants"
    )
    parser.add_argument("--progress", type=Path, default=Path("mutants/.by_hand_progress"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out, args.progress = args.out.resolve(), args.progress.resolve()

    names = list(args.names)
    for function in args.functions:
        names += mutant_names(function)
    for name in names:  # a misspelt name would run the original and "survive"
        module, _, mutant = name.rpartition(".")
        if not module:  # "fail": every trampoline raises, to check the tests notice
            continue
        source = (MUTANTS / (module.replace(".", "/") + ".py")).read_text()
        if not re.search(rf"def {re.escape(mutant)}\(", source):
            parser.error(f"no mutant {name} in mutants/")
    seen: set[str] = set()
    if args.out.exists():
        seen = {json.loads(line)["name"] for line in args.out.read_text().splitlines() if line}
    todo = [n for n in names if n not in seen]
    if args.worker:
        judge_in_process(todo, args)
        return
    print(f"{len(names)} mutants, {len(todo)} to judge", flush=True)
    if args.in_process:
        while todo:
            args.progress.unlink(missing_ok=True)
            command = [sys.executable, *sys.argv, "--worker"]
            subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
            seen = {json.loads(line)["name"] for line in args.out.read_text().splitlines() if line}
            hung = args.progress.read_text() if args.progress.exists() else ""
            if hung and hung not in seen:  # the worker ended (time-out) during this one
                with args.out.open("a") as out:
                    out.write(
                        json.dumps(
                            {
                                "name": hung,
                                "verdict": "timeout",
                                "seconds": args.limit,
                                "failed": "",
                                "tests": args.tests,
                                "in_process": True,
                            }
                        )
                        + "\n"
                    )
                seen.add(hung)
                print(f"{hung} timeout", flush=True)
            remaining = [n for n in todo if n not in seen]
            if len(remaining) == len(todo):
                sys.exit("the worker judged nothing")
            todo = remaining
        return
    with args.out.open("a") as out:
        for i, name in enumerate(todo, 1):
            result = judge(name, args.tests, args.limit, args.pytest_arg)
            out.write(json.dumps(result) + "\n")
            out.flush()
            print(f"{i}/{len(todo)} {name} {result['verdict']} {result['seconds']}s", flush=True)


if __name__ == "__main__":
    main()
