"""`sage report` opened in a real headless Chromium (the Debian package `chromium`, driven by
Playwright): every image loads, nothing logs an error, nothing is fetched from a network, the page
does not scroll sideways at 1280 px, and the front table lists exactly the trials the plot labels.

The store is quickstart-sized and written with analysis.store directly: 6 trials of a 3 x 2 grid
over lambda_esp and lambda_lsa, text rows at steps 20/40/60 (one trial pruned at 20, one at 40),
image rows for the four survivors, bootstrap intervals and long checkpoint paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")

GRID = [(esp, lsa) for lsa in (0.0, 0.1) for esp in (0.0, 2.0, 4.0)]
PRUNED_AT = {1: 20, 4: 40}  # trial index -> the rung that stopped it


def _rows() -> list[dict]:
    rng = np.random.default_rng(16)
    rows = []
    for i, (esp, lsa) in enumerate(GRID):
        trial = f"t{i:02d}"
        ckpt = f"/runs/quickstart/ray/tune/train_trial_{trial}_lambda_esp={esp:.4f},lambda_lsa={lsa:.4f}_2026-12-02"
        last = PRUNED_AT.get(i, 60)
        for step in (20, 40, 60):
            if step > last:
                break
            auc = 0.99 - 0.004 * esp * step / 60 + rng.normal(0, 0.003)
            sib = 0.88 - (0.25 - 0.05 * esp) * step / 60 + 0.3 * lsa + rng.normal(0, 0.005)
            status = "pruned" if step == last and i in PRUNED_AT else "finished" if step == 60 else "running"
            rows.append({"sweep_id": "quickstart-browser", "trial_id": trial, "step": step, "fidelity": "text",
                         "status": status, "method": "sage", "lambda_esp": esp, "lambda_lsa": lsa, "local_k": 15,
                         "matched_auc": auc, "matched_auc_lo": auc - 0.015, "matched_auc_hi": auc + 0.01,
                         "util_sib": sib, "util_sib_lo": sib - 0.008, "util_sib_hi": sib + 0.008,
                         "jaccard": 0.55 - 0.1 * step / 60 + 0.05 * esp / 4, "spread_dev": 0.05 + 0.001 * step,
                         "asr_text": 0.0, "util_text": 0.98, "checkpoint": f"{ckpt}/checkpoint_{step // 20 - 1:06d}"})
        if i not in PRUNED_AT:  # the survivors get image rows
            asr = 0.3 - 0.05 * esp + rng.normal(0, 0.01)
            tifa = 0.80 - 0.02 * esp + rng.normal(0, 0.005)
            rows.append({"sweep_id": "quickstart-browser", "trial_id": trial, "step": 60, "fidelity": "image",
                         "status": "finished", "method": "sage", "lambda_esp": esp, "lambda_lsa": lsa, "local_k": 15,
                         "asr": asr, "asr_lo": asr - 0.04, "asr_hi": asr + 0.04, "tifa": tifa,
                         "tifa_lo": tifa - 0.02, "tifa_hi": tifa + 0.02, "checkpoint": f"{ckpt}/checkpoint_000002"})
    return rows


def _front(points: dict[str, tuple[float, float]], signs: tuple[int, int]) -> set[str]:
    """Trials no other trial weakly beats in both objectives (and strictly in one)."""
    a = {t: (signs[0] * x, signs[1] * y) for t, (x, y) in points.items()}
    return {t for t, p in a.items()
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for u, q in a.items() if u != t)}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    import analysis
    from analysis.store import ResultStore

    root = tmp_path_factory.mktemp("browser")
    ResultStore(root / "results").write(_rows())
    return analysis.write_report(root, root / "report")


def test_report_in_headless_chromium(report: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    rows = _rows()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete, width: e.naturalWidth, "
                       "labels: e.dataset.labels || null}))")
            overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            tables = page.eval_on_selector_all("table.front", """els => els.map(t => ({
                fidelity: t.dataset.fidelity,
                head: [...t.querySelectorAll('thead th')].map(th => th.textContent.trim()),
                rows: [...t.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(td => td.textContent.trim()))}))""")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests  # nothing from a network
    # every image the page shows loaded, and every plot written is shown
    assert images and all(i["ok"] and i["width"] > 0 for i in images), images
    assert sorted(i["src"] for i in images) == sorted(f.name for f in report.parent.glob("*.png"))
    assert {"pareto_text.png", "pareto_image.png", "curves_0.png"} <= {i["src"] for i in images}
    assert overflow[0] <= overflow[1], f"page is {overflow[0]} px wide in a {overflow[1]} px window"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000

    # the front table lists exactly the trials the plot labels, with their own hyperparameters and rank
    by_fidelity = {t["fidelity"]: t for t in tables}
    assert set(by_fidelity) == {"text", "image"}
    for image in (i for i in images if i["labels"]):
        fidelity = image["src"].removeprefix("pareto_").removesuffix(".png")
        table = by_fidelity[fidelity]
        col = {name: k for k, name in enumerate(table["head"])}
        assert sorted(json.loads(image["labels"])) == sorted(r[col["label"]] for r in table["rows"])
        x, y, signs = ("matched_auc", "util_sib", (1, -1)) if fidelity == "text" else ("asr", "tifa", (1, -1))
        last = {}
        for r in rows:
            if r["fidelity"] == fidelity and (r["trial_id"] not in last or r["step"] > last[r["trial_id"]]["step"]):
                last[r["trial_id"]] = r
        assert sorted(r[col["trial_id"]] for r in table["rows"]) == sorted(last)  # every trial, labelled
        for r in table["rows"]:
            mine = last[r[col["trial_id"]]]
            assert r[col["label"]] == f"lambda_esp={mine['lambda_esp']:g}, lambda_lsa={mine['lambda_lsa']:g}"
            assert r[col["checkpoint"]] == mine["checkpoint"] and int(r[col["step"]]) == mine["step"]
        on_front = {r[col["trial_id"]] for r in table["rows"] if r[col["front"]] == "1"}
        assert on_front == _front({t: (r[x], r[y]) for t, r in last.items()}, signs)
