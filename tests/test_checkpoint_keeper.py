"""CheckpointKeeper on plain folders: pruning keeps the newest and the last good; a bad loss drops the pending one."""

from __future__ import annotations

from pathlib import Path

from sage_core.checkpoint import META_FILE
from sage_core.checkpoint_keeper import CheckpointKeeper


def _write(keeper: CheckpointKeeper, step: int) -> Path:
    path = keeper.path_for(step)
    path.mkdir(parents=True)
    (path / META_FILE).write_text("{}", encoding="utf-8")
    keeper.written(path)
    return path


def _on_disk(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_keeps_the_newest_and_the_last_good_one(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep=1)
    _write(keeper, 1)
    keeper.loss_was_finite()  # step 1 confirmed good
    _write(keeper, 2)  # step 2 pending: 1 stays as the last good one although keep=1
    assert _on_disk(tmp_path) == ["step_000001", "step_000002"]
    _write(keeper, 3)  # 2 was never confirmed and is beyond keep: gone; 1 still the last good
    assert _on_disk(tmp_path) == ["step_000001", "step_000003"]
    keeper.loss_was_finite()
    _write(keeper, 4)
    assert _on_disk(tmp_path) == ["step_000003", "step_000004"]
    assert keeper.latest == keeper.path_for(4) and keeper.last_good == keeper.path_for(3)


def test_a_bad_loss_drops_the_pending_checkpoint_and_names_the_good_one(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep=3)
    assert keeper.loss_was_not_finite() == "no checkpoint was good"
    _write(keeper, 1)
    keeper.loss_was_finite()
    _write(keeper, 2)
    hint = keeper.loss_was_not_finite()
    assert _on_disk(tmp_path) == ["step_000001"]
    good = tmp_path / "checkpoints" / "step_000001"
    assert hint == f"the last good checkpoint is {good} (resume from it with a lower lr)"


def test_a_resumed_run_starts_from_its_checkpoint(tmp_path):
    resumed = tmp_path / "elsewhere" / "step_000005"
    keeper = CheckpointKeeper(tmp_path, keep=2, resume_from=resumed)
    assert keeper.latest == keeper.last_good == resumed and keeper.pending is None
