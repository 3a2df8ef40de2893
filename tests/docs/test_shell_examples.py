"""Every shell example in README.md and docs/*.md runs, as typed, against a real server.

A document's ```sh/```bash/```console blocks run in order in one bash session against
``tusserver serve`` on a free port (see ``tests/docs/shell_examples.py`` for what the session
provides). A block that cannot run here (docker compose, a cloud deployment, ``make test``
itself) carries ``<!-- doc-test: skip (reason) -->`` on the line before its fence; skips are
counted and reported, and an unmarked block that fails fails its document's test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.shell_examples import ROOT, Block, blocks, run_document
from tests.netutil import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_blocks() -> list[Block]:
    return [block for path in DOCUMENTS for block in blocks(path)]


def runnable_documents() -> list[Path]:
    return [p for p in DOCUMENTS if any(b.skip is None for b in blocks(p))]


@pytest.mark.parametrize("path", runnable_documents(), ids=lambda p: p.name)
def test_examples_run(path: Path, tmp_path: Path) -> None:
    found = blocks(path)
    runnable = [b for b in found if b.skip is None]
    skipped = [b for b in found if b.skip is not None]
    outcome = run_document(runnable, tmp_path, free_port())
    print(f"{path.name}: {len(runnable)} blocks run, {len(skipped)} skipped")
    for block in skipped:
        print(f"  skipped {block.where}: {block.skip}")
    if outcome.returncode != 0:
        where = outcome.failed.where if outcome.failed else "before the first block"
        code = outcome.failed.code if outcome.failed else ""
        pytest.fail(
            f"the example at {where} failed (exit {outcome.returncode}):\n{code}\n"
            f"--- output ---\n{outcome.output[-6000:]}\n"
            f"--- server log ---\n{outcome.server_log[-4000:]}"
        )


def test_skips_are_counted_and_few() -> None:
    found = all_blocks()
    skipped = [b for b in found if b.skip is not None]
    summary = "\n".join(f"{b.where}: {b.skip}" for b in skipped)
    print(f"{len(found)} shell blocks, {len(skipped)} skipped:\n{summary}")
    assert len(found) - len(skipped) >= 10, "the documents lost their runnable examples"
    assert len(skipped) <= len(found) // 2, f"most examples should run:\n{summary}"


def test_the_readme_quickstart_runs() -> None:
    readme = [b for b in blocks(ROOT / "README.md") if b.skip is None]
    assert any("Location" in b.code or "location" in b.code for b in readme)
    assert any(".venv/bin/tusserver token" in b.code for b in readme)


# ---- the runner itself: it finds blocks, honours markers, and fails ---------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return path


def test_blocks_markers_and_console_prompts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "intro\n\n```sh\necho one\n```\n\n<!-- doc-test: skip (needs docker) -->\n"
        "```bash\ndocker compose up\n```\n\n```python\nprint()\n```\n\n"
        "```console\n$ echo two\ntwo\n```\n",
    )
    found = blocks(path)
    assert [(b.language, b.skip, b.line) for b in found] == [
        ("sh", None, 3),
        ("bash", "needs docker", 8),
        ("console", None, 16),
    ]
    assert found[2].code == "echo two\n"


def test_a_marker_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "<!-- doc-test: skip -->\n```sh\ntrue\n```\n")
    with pytest.raises(ValueError, match="marker"):
        blocks(path)


def test_an_unmarked_failing_block_fails_and_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "```sh\nU=$(curl -s http://127.0.0.1:8080/files/ -X OPTIONS -o /dev/null -w ok)\n"
        "echo $U\n```\n\n```sh\ncurl -s http://127.0.0.1:8080/files/nothing-here\n```\n",
    )
    work = tmp_path / "work"
    work.mkdir()
    outcome = run_document(blocks(path), work, free_port())
    assert outcome.returncode != 0
    assert outcome.failed is not None
    assert outcome.failed.line == 6
    assert "ok" in outcome.output


def test_placeholders_fail(tmp_path: Path) -> None:
    # The old README's `U=http://127.0.0.1:8080/files/<id from Location>` is a syntax error.
    path = write(tmp_path, "```sh\nU=http://127.0.0.1:8080/files/<id from Location>\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    assert run_document(blocks(path), work, free_port()).returncode != 0
