"""`sage report` on a store with robust_* objectives: the 3-objective front (safety, utility, safety
after the benign fine-tune) as a plot of its projections and a table with intervals, checked against a
brute-force front and an exact grid hypervolume computed here; a store without them has no section."""

from __future__ import annotations

import itertools
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from analysis.report import robust_fronts, write_report
from analysis.store import ResultStore

# (lambda_esp, lambda_lsa) -> (concept_auc, util_sib, robust_concept_auc); minimise, maximise, minimise.
TRIALS = {
    "t0": (0.0, 0.0, (0.30, 0.65, 0.93)),   # safest before the fine-tune, worst utility, erasure comes back
    "t1": (2.0, 0.0, (0.60, 0.84, 0.97)),   # dominated by t3 in all three
    "t2": (0.0, 0.1, (0.50, 0.82, 0.80)),   # dominated by t3 in (concept_auc, util_sib), saved by persistence
    "t3": (2.0, 0.1, (0.45, 0.88, 0.90)),
    "t4": (4.0, 0.1, (0.45, 0.88, 0.95)),   # weakly dominated by t3 (ties in two, worse in one)
}


def _rows(with_robust: bool) -> list[dict]:
    rows = []
    for trial, (esp, lsa, (auc, sib, rob)) in TRIALS.items():
        for step in (30, 60):
            shift = 0.0 if step == 60 else 0.2  # the front is taken at each trial's last step
            row = {"sweep_id": "rob", "trial_id": trial, "step": step, "fidelity": "text",
                   "status": "finished" if step == 60 else "running", "lambda_esp": esp, "lambda_lsa": lsa,
                   "concept_auc": auc + shift, "concept_auc_lo": auc + shift - 0.05,
                   "concept_auc_hi": auc + shift + 0.04, "util_sib": sib, "util_sib_lo": sib - 0.01,
                   "util_sib_hi": sib + 0.01,
                   # the default safety objective (the text-level front); the robust fronts pair concept_auc
                   "matched_auc": auc + shift, "matched_auc_lo": auc + shift - 0.05,
                   "matched_auc_hi": auc + shift + 0.04}
            if with_robust:
                row.update({"robust_concept_auc": rob, "robust_concept_auc_lo": rob - 0.03,
                            "robust_concept_auc_hi": rob + 0.02, "robust_concept_auc_delta": rob - auc - shift,
                            "robust_concept_auc_delta_lo": rob - auc - shift - 0.04,
                            "robust_concept_auc_delta_hi": rob - auc - shift + 0.04,
                            "prox_drift": 0.5 - 0.08 * esp, "prox_drift_lo": 0.45 - 0.08 * esp,
                            "prox_drift_hi": 0.55 - 0.08 * esp, "sadi_text": 0.3 + 0.03 * esp})
            rows.append(row)
    return rows


def _min_points() -> dict[str, np.ndarray]:
    return {t: np.array([auc, -sib, rob]) for t, (_, _, (auc, sib, rob)) in TRIALS.items()}


def _brute_front() -> set[str]:
    pts = _min_points()
    return {t for t, p in pts.items()
            if not any(np.all(q <= p) and np.any(q < p) for u, q in pts.items() if u != t)}


def _grid_hypervolume(points: list[np.ndarray], ref: np.ndarray) -> float:
    """Exact volume of the union of boxes [p, ref]: sum the grid cells some point dominates."""
    axes = [np.unique(np.concatenate([[p[d] for p in points], [ref[d]]])) for d in range(3)]
    vol = 0.0
    for i, j, k in itertools.product(*(range(len(a) - 1) for a in axes)):
        corner = np.array([axes[0][i], axes[1][j], axes[2][k]])
        if any(np.all(p <= corner) for p in points):
            vol += np.prod([axes[0][i + 1] - axes[0][i], axes[1][j + 1] - axes[1][j], axes[2][k + 1] - axes[2][k]])
    return float(vol)


class _Tables(HTMLParser):
    """Rows of every <table> with a data-front3 attribute."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._cur: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-front3" in attrs:
            self._cur = self.tables.setdefault(attrs["data-front3"], [])
        elif self._cur is not None and tag == "tr":
            self._cur.append([])
        elif self._cur is not None and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._cur = None
        elif tag in ("td", "th") and self._cell is not None and self._cur is not None:
            self._cur[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def robust_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robust")
    ResultStore(root / "results").write(_rows(with_robust=True))
    return write_report(root, root / "report")


def test_report_shows_the_three_objective_front_with_intervals(robust_report: Path):
    page = robust_report.read_text(encoding="utf-8")
    assert "3-objective front, text level (concept_auc, util_sib, robust_concept_auc)" in page
    image = robust_report.parent / "front3_robust_concept_auc.png"
    assert 'src="front3_robust_concept_auc.png"' in page and image.stat().st_size > 5000

    parser = _Tables()
    parser.feed(page)
    header, *body = parser.tables["robust_concept_auc"]
    assert header[:2] == ["label", "front"]
    assert {"trial_id", "concept_auc", "util_sib", "robust_concept_auc", "robust_concept_auc_delta", "prox_drift",
            "sadi_text"} <= set(header)
    col = {name: i for i, name in enumerate(header)}
    front = {r[col["trial_id"]] for r in body if r[col["front"]] == "1"}
    assert front == _brute_front() == {"t0", "t2", "t3"}
    assert {r[col["trial_id"]] for r in body} == set(TRIALS)  # 5 trials: every one is labelled
    # the last step's values with their intervals, and the fine-tune's paired delta beside them
    t2 = next(r for r in body if r[col["trial_id"]] == "t2")
    assert t2[col["label"]] == "lambda_esp=0, lambda_lsa=0.1"
    assert t2[col["concept_auc"]] == "0.500 [0.450, 0.540]"
    assert t2[col["robust_concept_auc"]] == "0.800 [0.770, 0.820]"
    assert t2[col["robust_concept_auc_delta"]] == "0.300 [0.260, 0.340]"
    assert t2[col["prox_drift"]] == "0.500 [0.450, 0.550]"

    # hypervolume of the front against the trials' nadir, in minimisation space
    pts = _min_points()
    ref = np.max(np.stack(list(pts.values())), axis=0)
    expected = _grid_hypervolume([pts[t] for t in sorted(front)], ref)
    shown = float(re.search(r"on the front \(no other trial.*?nadir: ([0-9.e+-]+)\.", page, re.S).group(1))
    assert expected > 0 and shown == pytest.approx(expected, rel=1e-3)


def test_no_robust_objective_no_three_objective_section(tmp_path: Path):
    ResultStore(tmp_path / "results").write(_rows(with_robust=False))
    page = write_report(tmp_path, tmp_path / "report").read_text(encoding="utf-8")
    assert "Pareto front, text level" in page and "3-objective" not in page
    assert not list((tmp_path / "report").glob("front3_*.png"))


def test_robust_fronts_pair_each_robust_safety_objective_with_its_own_safety_metric():
    cols = ["concept_auc", "concept_auc_abs", "util_sib", "robust_concept_auc", "robust_concept_auc_abs",
            "robust_concept_auc_delta"]
    assert robust_fronts(cols) == [("concept_auc", "util_sib", "robust_concept_auc"),
                                   ("concept_auc_abs", "util_sib", "robust_concept_auc_abs")]
    assert robust_fronts(["concept_auc", "robust_concept_auc"]) == []  # no utility column
