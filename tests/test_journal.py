from __future__ import annotations

from pathlib import Path

import pytest

from chaoslab import journal


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "INDEX_DIR", tmp_path / "runs")


def test_pending_intents_newest_first_with_updates(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "j.jsonl", "run1")
    a = j.intent("netns", name="ns-a")
    b = j.intent("process", target="api")
    j.update(b, pid=123)
    c = j.intent("fault", kind="entropy", addr=10)
    j.undone(c)
    entries = journal.pending(tmp_path / "j.jsonl")
    assert [(e.seq, e.kind) for e in entries] == [(b, "process"), (a, "netns")]
    assert entries[0].data == {"target": "api", "pid": 123}
    j.close(clean=False)
    assert list(journal.indexed_runs())  # an unclean run stays indexed for recover


def test_torn_last_line_is_ignored_and_clean_close_unindexes(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "j.jsonl", "run2")
    j.intent("netns", name="x")
    j.close(clean=True)
    with (tmp_path / "j.jsonl").open("a") as fh:
        fh.write('{"seq": 9, "op": "inte')
    assert [e.data["name"] for e in journal.pending(tmp_path / "j.jsonl")] == ["x"]
    assert not list(journal.indexed_runs())
