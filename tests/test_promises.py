"""Every promise the README makes is pinned by a test: docs/testing.md maps each to its tests.

How it stays in step (also explained in docs/testing.md):

- A README *promise* is a prose sentence (code blocks and tables are left out) that says what
  inboxd always, never or only does, found by the words in ``PROMISE_WORDS``. The rule is
  deliberately mechanical so nobody has to decide sentence by sentence what counts.
- docs/testing.md quotes each promise verbatim in a ``> `` line, followed by ``- `` lines naming
  the tests (``tests/path.py::test_name``) that fail when it is broken.
- This test fails when a README promise has no entry, when an entry quotes a sentence the README
  no longer has, or when a named test does not exist.

``python -m tests.test_promises`` prints what is out of step (unmapped promises as ready-to-fill
entries, stale quotes, missing tests), for whoever merges a README change.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAP = ROOT / "docs" / "testing.md"

PROMISE_WORDS = re.compile(
    r"\b(never|always|only|at most|cannot|every|no field|redacted|encrypted|bound to|"
    r"SERVICE_UNAVAILABLE|closed with|within its timeout)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*\"(])")


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def readme_sentences(text: str) -> list[str]:
    """The README's prose, one sentence per item: no code blocks, tables or headings."""
    prose, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or line.lstrip().startswith(("|", "#")):
            prose.append("")
            continue
        stripped = line.strip()
        item = re.match(r"^(- |\d+\. )", stripped)
        if item:
            prose.append("")  # a list item starts a new sentence
            stripped = stripped[item.end() :]
        prose.append(stripped)
    sentences = []
    for paragraph in "\n".join(prose).split("\n\n"):
        for bullet in paragraph.split("\n\n"):
            for sentence in _SENTENCE_END.split(_normal(bullet)):
                if sentence:
                    sentences.append(sentence)
    return sentences


def promises(text: str) -> list[str]:
    return [s for s in readme_sentences(text) if PROMISE_WORDS.search(s)]


def promise_map(text: str) -> dict[str, list[str]]:
    """docs/testing.md: ``> sentence`` lines, each followed by ``- tests/...::test`` lines."""
    entries: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("> "):
            current = _normal(line[2:])
            entries.setdefault(current, [])
        elif current is not None and re.match(r"^- (`?tests/|n/a: )", line):
            entries[current].append(line[2:].strip().strip("`"))
        elif not line.strip() and current is not None and entries[current]:
            current = None
    return entries


def names_a_test(node_id: str) -> bool:
    if node_id.startswith("n/a: "):  # not a behaviour of inboxd (the dev script, a benchmark)
        return len(node_id) > len("n/a: ") + 10
    path, _, name = node_id.partition("::")
    file = ROOT / path
    if not file.is_file() or not name:
        return False
    function = name.split("::")[-1].split("[")[0]
    return (
        re.search(rf"^\s*(async )?def {re.escape(function)}\(", file.read_text(), re.M) is not None
    )


def out_of_step() -> tuple[list[str], list[str], list[str]]:
    readme = _normal(README.read_text())
    readme_promises = promises(README.read_text())
    entries = promise_map(MAP.read_text())
    unmapped = [p for p in readme_promises if _normal(p) not in entries]
    stale = [quote for quote in entries if quote not in readme]
    missing = [
        f"{quote[:60]}... -> {node}"
        for quote, nodes in entries.items()
        for node in nodes or ["(no test named)"]
        if not names_a_test(node)
    ]
    return unmapped, stale, missing


def test_every_readme_promise_is_mapped_to_a_test():
    unmapped, _, _ = out_of_step()
    assert unmapped == [], (
        "README promises with no test in docs/testing.md (python -m tests.test_promises)"
    )


def test_every_mapped_sentence_is_still_in_the_readme():
    _, stale, _ = out_of_step()
    assert stale == [], "docs/testing.md quotes sentences the README no longer has"


def test_every_mapped_test_exists():
    _, _, missing = out_of_step()
    assert missing == []


def test_the_parser_finds_promises_and_skips_code_and_tables():
    sample = (
        "# Title\n\nIt is fast. It never sends a password;\nnot even once.\n\n"
        "```sh\nnever run this\n```\n\n| never | a table |\n\n- only a bullet. Plain one.\n"
    )
    assert promises(sample) == ["It never sends a password; not even once.", "only a bullet."]


def main() -> int:
    unmapped, stale, missing = out_of_step()
    for sentence in unmapped:
        print(f"> {sentence}\n- tests/...::test_...\n")
    for quote in stale:
        print(f"stale (no longer in README.md): {quote}", file=sys.stderr)
    for line in missing:
        print(f"no such test: {line}", file=sys.stderr)
    return 1 if unmapped or stale or missing else 0


if __name__ == "__main__":
    sys.exit(main())
