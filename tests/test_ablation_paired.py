"""`sage ablation --vs`: paired differences against one reference row, on a real store (Parquet results,
DuckDB, per-prompt score files), checked against an independent numpy bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.ablation import ablation_table
from analysis.ablation_paired import delta_column, marked
from analysis.paired_compare import objective_value
from analysis.prompt_scores import write_prompt_scores
from analysis.store import ResultStore
from sweeps.cli import main
from tests.test_paired_compare import synthetic, table_of

OBJECTIVES = ["concept_auc", "util_sib"]
POOLS = {"attack:a": 30, "attack:b": 20, "benign": 40, "group:color": 10, "group:shape": 14}


def shifted(base: dict, *, auc: float = 0.0, util: float = 0.0) -> dict:
    """The scores :func:`synthetic` records with these shifts (attack scores down, utility up)."""
    return {"a": base["a"] - auc, "b": base["b"] - auc, "benign": base["benign"], "util": base["util"] + util}


def numpy_replicates(s: dict, *, reps: int = 2000, seed: int = 0) -> np.ndarray:
    """[reps, 2] (concept_auc, util_sib) under the documented draw (pools in name order, one multinomial
    each, seeded), the AUC as a double sum over weighted pairs: no sorting, no shared code."""
    rng = np.random.default_rng(seed)
    w = {p: rng.multinomial(n, np.full(n, 1.0 / n), size=reps) for p, n in sorted(POOLS.items())}
    aucs = []
    for part in ("a", "b"):
        pos, neg = s[part], s["benign"]
        h = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        wp, wn = w[f"attack:{part}"], w["benign"]
        aucs.append(np.einsum("ri,ij,rj->r", wp, h, wn) / (wp.sum(1) * wn.sum(1)))
    util = [(w[f"group:{c}"] * u).sum(1) / w[f"group:{c}"].sum(1)
            for c, u in (("color", s["util"][:10]), ("shape", s["util"][10:]))]
    return np.stack([np.mean(aucs, axis=0), np.mean(util, axis=0)], axis=1)


def write_sweep(root: Path, trials: dict[tuple[str, int], object | None], *, other_prompts: tuple = ()) -> None:
    """A sweep folder: one finished text row per (variant, seed) trial at step 10 with the objectives its
    scores give, and its score file (None: a trial that wrote none; ``other_prompts``: scored on other prompts)."""
    rows = []
    for (variant, seed), rec in trials.items():
        tid = f"{variant}-{seed}"
        values = {"concept_auc": 0.7, "util_sib": 0.5}
        if rec is not None:
            t = table_of(rec)
            values = {m: objective_value(t, m) for m in OBJECTIVES}
            pools = {k: {**v, "fingerprint": "sha256:other"} if variant in other_prompts else v
                     for k, v in rec.pools.items()}
            write_prompt_scores(str(root / "prompt_scores"), sweep_id="sw", trial_id=tid, step=10,
                                columns=rec.columns(), pools=pools)
        for step in (5, 10):  # the first rung's row is never the one compared
            rows.append({"sweep_id": "sw", "trial_id": tid, "step": step, "fidelity": "text", "seed": seed,
                         "status": "finished" if step == 10 else "running", "variant": variant,
                         "lambda_esp": 0.0 if variant.startswith("DES") else 2.0,
                         **{m: v + (0.1 if step == 5 else 0.0) for m, v in values.items()}})
    ResultStore(root / "results").write(rows)


@pytest.fixture()
def one_seed(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(5)
    des, base = synthetic(rng)
    sage = synthetic(rng, auc_shift=0.3, util_shift=0.05, base=base)[0]  # every prompt moved: separable
    write_sweep(tmp_path, {("DES", 0): des, ("SAGE", 0): sage, ("DES-copy", 0): synthetic(rng, base=base)[0],
                           ("DES+ESP", 0): None, ("OTHER", 0): sage}, other_prompts=("OTHER",))
    return tmp_path, base


def test_delta_and_interval_match_an_independent_paired_bootstrap(one_seed):
    root, base = one_seed
    df = ablation_table(root, param="variant", fmt=None, vs="DES", objectives=OBJECTIVES).set_index("variant")
    d = numpy_replicates(shifted(base, auc=0.3, util=0.05)) - numpy_replicates(base)
    for k, m in enumerate(OBJECTIVES):
        col = delta_column(m, "DES")
        # the point is the difference of the table's own values, the bounds the 2.5/97.5 percentiles
        assert df.loc["SAGE", col] == pytest.approx(df.loc["SAGE", m] - df.loc["DES", m], abs=1e-12)
        assert (df.loc["SAGE", f"{col}_lo"], df.loc["SAGE", f"{col}_hi"]) == pytest.approx(
            tuple(np.percentile(d[:, k], [2.5, 97.5])), abs=1e-9)
    # utility moved by +0.05 on every group: every replicate's mean moves by exactly that
    assert df.loc["SAGE", delta_column("util_sib", "DES") + "_lo"] == pytest.approx(0.05, abs=1e-12)
    assert np.isnan(df.loc["DES", delta_column("concept_auc", "DES")])  # the reference row


def test_excludes_zero_mark_on_a_moved_row_not_on_an_exact_copy(one_seed):
    root, _ = one_seed
    df = ablation_table(root, param="variant", fmt=None, vs="DES", objectives=OBJECTIVES)
    by = df.set_index("variant")
    for m in OBJECTIVES:
        col = delta_column(m, "DES")
        assert (by.loc["DES-copy", col], by.loc["DES-copy", f"{col}_lo"], by.loc["DES-copy", f"{col}_hi"]) == (0, 0, 0)
        assert by.loc["SAGE", f"{col}_lo"] > 0 or by.loc["SAGE", f"{col}_hi"] < 0
    shown = marked(df).set_index("variant")
    for m in OBJECTIVES:
        col = delta_column(m, "DES")
        assert shown.loc["SAGE", col].endswith(" *") and shown.loc["DES", col] == "ref"
        assert shown.loc["DES-copy", col] == "0.000 [0.000, 0.000]"
    text = ablation_table(root, param="variant", fmt="md", vs="DES", objectives=OBJECTIVES)
    sage_line = next(line for line in text.splitlines() if line.startswith("| SAGE |"))
    assert sage_line.count(" * |") == 2


def test_rows_without_scores_or_on_other_prompts_get_empty_cells_and_one_note_each(one_seed):
    root, _ = one_seed
    df = ablation_table(root, param="variant", fmt=None, vs="DES", objectives=OBJECTIVES).set_index("variant")
    for row in ("DES+ESP", "OTHER"):
        assert df.loc[row, [delta_column(m, "DES") for m in OBJECTIVES]].isna().all()
    notes = df.attrs["paired_notes"]
    assert [n for n in notes if "DES+ESP" in n] == ["No per-prompt scores for variant = DES+ESP: Δ left empty."]
    assert [n for n in notes if "OTHER" in n] == [
        "Not scored on the same prompts as variant = DES: OTHER; Δ left empty."]
    text = ablation_table(root, param="variant", fmt="md", vs="DES", objectives=OBJECTIVES)
    assert "No per-prompt scores for variant = DES+ESP" in text and "| DES+ESP |" in text
    # against a reference without scores, nothing can be paired
    empty = ablation_table(root, param="variant", fmt=None, vs="DES+ESP", objectives=OBJECTIVES)
    assert empty[[delta_column(m, "DES+ESP") for m in OBJECTIVES]].isna().all().all()
    assert "No per-prompt scores for the reference row variant = DES+ESP: every Δ cell is empty." in \
        empty.attrs["paired_notes"]


def test_seeds_are_averaged_replicate_by_replicate(tmp_path: Path):
    rng = np.random.default_rng(6)
    des0, base = synthetic(rng)
    noisy = {**base, "util": base["util"] + rng.normal(0, 0.05, 24), "a": base["a"] + 0.1}
    scores = {("DES", 0): base, ("DES", 1): noisy, ("SAGE", 0): shifted(base, auc=0.2, util=0.03),
              ("SAGE", 1): shifted(noisy, auc=0.4, util=0.01)}
    write_sweep(tmp_path, {k: synthetic(rng, base=s)[0] for k, s in scores.items()})
    df = ablation_table(tmp_path, param="variant", fmt=None, vs="DES", objectives=OBJECTIVES).set_index("variant")
    assert list(df["n"]) == [2, 2]
    reps = {k: numpy_replicates(s) for k, s in scores.items()}
    d = (reps["SAGE", 0] + reps["SAGE", 1]) / 2 - (reps["DES", 0] + reps["DES", 1]) / 2
    for k, m in enumerate(OBJECTIVES):
        col = delta_column(m, "DES")
        assert df.loc["SAGE", col] == pytest.approx(df.loc["SAGE", m] - df.loc["DES", m], abs=1e-12)
        assert (df.loc["SAGE", f"{col}_lo"], df.loc["SAGE", f"{col}_hi"]) == pytest.approx(
            tuple(np.percentile(d[:, k], [2.5, 97.5])), abs=1e-9)
    assert any("averaged replicate by replicate" in n for n in df.attrs["paired_notes"])


def _sage(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_vs(one_seed, capsys):
    root, _ = one_seed
    code, out, err = _sage(capsys, "ablation", str(root), "--param", "variant", "--vs", "DES")
    assert code == 0 and not err
    # no spec.yaml: the default objectives, of which these scores hold util_sib
    assert "Δutil_sib vs DES" in out and "Δmatched_auc" not in out
    assert next(line for line in out.splitlines() if line.startswith("| SAGE |")).endswith(" * |")
    code, out, err = _sage(capsys, "ablation", str(root), "--param", "variant", "--vs", "SAGE2")
    assert code == 2 and not out
    assert err.strip().splitlines() == [
        "error: vs 'SAGE2' is not a value of variant in the ablation table "
        "(values present: DES, DES+ESP, DES-copy, OTHER, SAGE)"]
    code, out, err = _sage(capsys, "ablation", str(root), "--param", "lambda_esp", "--vs", "1")
    assert code == 2 and "vs '1' is not a value of lambda_esp" in err and "(values present: 0, 2)" in err
    code, out, err = _sage(capsys, "ablation", str(root), "--param", "lambda_esp", "--vs", "2", "--format", "csv")
    assert code == 0 and "Δutil_sib vs 2_lo" in out.splitlines()[0]
