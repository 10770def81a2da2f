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


def test_a_run_does_not_take_over_a_journal_with_actions_left(tmp_path: Path) -> None:
    """An --out whose journal holds an earlier run's actions that were never undone (that run
    died, or runs still) is refused: its watchdog would read them as this run's. A finished
    or recovered run's journal is replaced by the new run's, which starts empty."""
    from chaoslab.errors import PreflightError
    from chaoslab.orchestrator import new_run
    from chaoslab.scenario import load_scenario
    from tests.conftest import SCENARIOS

    scenario = load_scenario(SCENARIOS / "short_entropy.yaml")
    out = tmp_path / "out"
    dead = journal.Journal(out / "journal.jsonl", "dead-run", out)
    dead.intent("netns", name="ns-a")
    done = dead.intent("fault", kind="entropy", addr=10)
    dead.update(done, pid=1)
    dead.close(clean=False)  # died with both actions in place
    with pytest.raises(PreflightError) as exc:
        new_run(scenario, out, lambda _: None)
    said = f"{out} holds the journal of a run that left 2 action(s) not undone (fault, netns)"
    assert str(exc.value) == said
    assert exc.value.hint.startswith(f"run `chaoslab recover {out / 'journal.jsonl'}` first")
    assert len(journal.pending(out / "journal.jsonl")) == 2  # left as it was, for recover

    for seq in (1, 2):  # as `chaoslab recover` marks them
        journal.append(out / "journal.jsonl", {"seq": seq, "op": "undone"})
    ctx = new_run(scenario, out, lambda _: None)
    try:
        assert "ns-a" not in (out / "journal.jsonl").read_text()  # none of the dead run's records
        assert journal.pending(out / "journal.jsonl") == []
    finally:
        ctx.journal.close(clean=True)
