"""The store callback hands rows to a write-behind thread; results stay exactly once per key.

Tune's contract, played here with real ``Trial``/``Checkpoint`` objects, the real callback and a
real results store: for every result Tune calls ``on_trial_result`` then ``on_checkpoint`` (then
``on_trial_complete`` at the trial's end), and from time to time saves its experiment state, which
includes ``callback.get_state()``. A resumed driver restores that saved state and re-reports every
result after it. The fault: the results filesystem fails the k-th publish of a results file (a
real local filesystem under the ``failing://`` scheme), the driver stops at the error, a new driver
resumes from the last saved state on the healthy filesystem. The rows must equal the set computed
from the synthetic results alone: every reported result once, with its final status and path.
"""

from __future__ import annotations

import pickle
import random

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from analysis.store import ResultStore
from sage_core.defs.errors import StorageError

TRIALS, EVERY, TOTAL = 6, 10, 50
PRUNED_AT = {"t00002": 20, "t00004": 30}  # the scheduler stopped these there
SNAPSHOT_EVERY = 4                         # results between experiment-state saves


class FailingLocal(LocalFileSystem):
    """The local filesystem; the ``fail_at``-th rename (a results file made visible) raises."""

    protocol = ("failing",)
    fail_at: int | None = None
    renames = 0

    def mv(self, path1, path2, **kwargs):
        FailingLocal.renames += 1
        if FailingLocal.renames == FailingLocal.fail_at:
            raise OSError(28, "No space left on device (injected)")
        return super().mv(path1, path2, **kwargs)


fsspec.register_implementation("failing", FailingLocal, clobber=True)


def synthetic_results(seed: int) -> list[dict]:
    """Every trial's results in one seeded arrival order (each trial's own steps in order)."""
    rng = random.Random(seed)
    next_step = {f"t{i:05d}": EVERY for i in range(TRIALS)}
    out = []
    while next_step:
        tid = rng.choice(sorted(next_step))
        step = next_step[tid]
        last = step >= PRUNED_AT.get(tid, TOTAL)
        out.append({"trial_id": tid, "step": step, "total_steps": TOTAL, "final": float(step >= TOTAL),
                    "concept_auc": round(rng.random(), 6), "util_sib": round(rng.random(), 6),
                    **({"done": True} if last and step < TOTAL else {})})
        if last:
            del next_step[tid]
        else:
            next_step[tid] = step + EVERY
    return out


def expected_rows(results: list[dict]) -> dict[tuple[str, int], tuple]:
    """(trial, step) -> (status, concept_auc, util_sib, checkpoint), from the results alone."""
    out = {}
    for r in results:
        status = "finished" if r["final"] else "pruned" if r.get("done") else "running"
        out[(r["trial_id"], r["step"])] = (status, r["concept_auc"], r["util_sib"], ckpt_path(r))
    return out


def ckpt_path(r: dict) -> str:
    return f"/ckpt/{r['trial_id']}/step_{r['step']:06d}"


def stored_rows(root: str) -> dict[tuple[str, int], tuple]:
    rows = ResultStore(root).read().to_pylist()
    got = {(r["trial_id"], r["step"]): (r["status"], r["concept_auc"], r["util_sib"], r["checkpoint"]) for r in rows}
    assert len(got) == len(rows)
    return got


def make_callback(root: str):
    from sweeps.store_callback import StoreCallback

    return StoreCallback(results_root=root, sweep_id="s1", base={"max_steps": TOTAL}, code_version="test")


def make_trials():
    from ray.tune.experiment import Trial

    return {f"t{i:05d}": Trial("train_trial", config={"lambda_esp": float(i)}, trial_id=f"t{i:05d}", stub=True)
            for i in range(TRIALS)}


def drive(cb, results: list[dict], trials: dict, saved: dict) -> bool:
    """Feed ``results`` as Tune does; ``saved`` holds the last experiment state (callback state and
    the last step of each trial that state counts as processed). True if the driver stopped on an error."""
    from ray.tune import Checkpoint

    progress = dict(saved.get("progress", {}))
    all_trials = list(trials.values())
    try:
        for i, r in enumerate(results, 1):
            trial = trials[r["trial_id"]]
            result = {k: v for k, v in r.items() if k != "trial_id"}
            cb.on_trial_result(iteration=i, trials=all_trials, trial=trial, result=result)
            cb.on_checkpoint(iteration=i, trials=all_trials, trial=trial, checkpoint=Checkpoint(path=ckpt_path(r)))
            if r["final"] or r.get("done"):
                cb.on_trial_complete(iteration=i, trials=all_trials, trial=trial, result=result)
            progress[r["trial_id"]] = r["step"]
            if i % SNAPSHOT_EVERY == 0:
                state = cb.get_state()  # raises (and Tune saves nothing) when rows are not in the store
                saved.update(callback=state, progress=dict(progress))
        cb.on_experiment_end(trials=all_trials)
    except StorageError as exc:
        assert "injected" in str(exc)
        return True
    saved.update(callback=cb.get_state(), progress=dict(progress))
    return False


@pytest.mark.parametrize("fail_at", [1, 2, 4, 6])  # <= 6: each of the 6 saved states needs its own write
def test_a_failed_write_then_resume_leaves_every_result_exactly_once(tmp_path, fail_at):
    root = tmp_path / "results"
    results = synthetic_results(seed=fail_at)
    FailingLocal.renames, FailingLocal.fail_at = 0, fail_at
    saved: dict = {}
    trials = make_trials()
    crashed = drive(make_callback(f"failing://{root}"), results, trials, saved)
    assert crashed, f"the {fail_at}-th write never happened: the fault was not exercised"
    # A new driver: Tune restores its saved state and re-runs every result after it.
    done = saved.get("progress", {})
    replay = [r for r in results if r["step"] > done.get(r["trial_id"], 0)]
    assert len(replay) < len(results) or fail_at == 1
    cb = make_callback(str(root))
    cb.set_state(saved.get("callback", {}))
    assert not drive(cb, replay, make_trials(), dict(saved))
    assert stored_rows(str(root)) == expected_rows(results)


def test_rows_are_batched_and_complete_without_a_fault(tmp_path):
    root = str(tmp_path / "results")
    results = synthetic_results(seed=11)
    cb = make_callback(root)
    assert not drive(cb, results, make_trials(), {})
    assert stored_rows(root) == expected_rows(results)
    # The callback used to write one file per hook call (result + checkpoint path): 2 per result.
    hook_calls = 2 * len(results)
    assert len(ResultStore(root).files()) < hook_calls


def test_get_state_waits_for_the_rows_and_the_callback_pickles_without_its_thread(tmp_path):
    root = str(tmp_path / "results")
    results = synthetic_results(seed=5)[:3]
    cb = make_callback(root)
    trials = make_trials()
    for i, r in enumerate(results):
        cb.on_trial_result(iteration=i, trials=[], trial=trials[r["trial_id"]], result=dict(r))
    state = cb.get_state()
    got = {(r["trial_id"], r["step"]) for r in ResultStore(root).read().to_pylist()}
    assert got == {(r["trial_id"], r["step"]) for r in results}
    assert set(state["last_rows"]) == {r["trial_id"] for r in results}
    clone = pickle.loads(pickle.dumps(cb))
    assert clone._writer is None and clone.last_rows == cb.last_rows
    cb.on_experiment_end(trials=[])
    # The restored callback (this sweep's tuner.pkl, same code) starts a writer of its own and keeps writing.
    more = synthetic_results(seed=5)[3:6]
    for i, r in enumerate(more):
        clone.on_trial_result(iteration=3 + i, trials=[], trial=trials[r["trial_id"]], result=dict(r))
    clone.on_experiment_end(trials=[])
    got = {(r["trial_id"], r["step"]) for r in ResultStore(root).read().to_pylist()}
    assert got == {(r["trial_id"], r["step"]) for r in results + more} and len(got) == 6


def test_write_behind_keeps_failed_rows_and_lets_newer_rows_of_a_key_win(tmp_path):
    from sweeps.store_writer import WriteBehind

    class Store:
        """A real store whose first write fails (disk full), as the filesystem above."""

        def __init__(self) -> None:
            self.inner, self.calls = ResultStore(str(tmp_path / "r")), 0

        def write(self, rows):
            self.calls += 1
            if self.calls == 1:
                raise StorageError("cannot write results: disk full (injected)")
            return self.inner.write(rows)

    store = Store()
    key = lambda row: (row["sweep_id"], row["trial_id"], row["step"], row["fidelity"])  # noqa: E731
    w = WriteBehind(store, key=key)
    row = {"sweep_id": "s", "trial_id": "t", "step": 1, "fidelity": "text", "status": "running"}
    w.put([row])
    with pytest.raises(StorageError, match="injected"):
        w.flush()
    assert w.pending == 1  # the failed batch is still queued, not dropped
    with pytest.raises(StorageError, match="injected"):
        w.put([{**row, "status": "finished"}])  # a stopped writer refuses new rows loudly
    assert store.inner.files() == []
