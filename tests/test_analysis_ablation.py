"""Ablation tables on the components sweep layout: every variant listed, headline columns with
intervals first, the rest on request; intervals in `sage pareto`, `sage sweep status` and the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import analysis
from analysis.ablation import ablation_frame, to_markdown
from analysis.intervals import fmt_interval, interval_frame
from analysis.store import ResultStore
from sweeps.cli import main

# What each variant of sweeps/specs/ablation-components.yaml sets (the rest at quickstart values).
VARIANTS = {"DES": {"method": "des", "lambda_esp": 0.0, "lambda_lsa": 0.0},
            "DES+ESP": {"lambda_lsa": 0.0}, "DES+LSA": {"lambda_esp": 0.0}, "SAGE": {}, "SAGE-alpha0": {"alpha": 0.0}}
UTIL = {"DES": 0.41, "DES+ESP": 0.55, "DES+LSA": 0.52, "SAGE": 0.63, "SAGE-alpha0": 0.60}


def _iv(name: str, value: float, half: float = 0.03) -> dict[str, float]:
    return {name: value, f"{name}_lo": value - half, f"{name}_hi": value + half}


def _rows(repeats: int = 1, crossed: tuple[float, ...] = (0.3,)) -> list[dict]:
    rows = []
    for r in range(repeats):
        for safe in crossed:
            for i, (variant, sets) in enumerate(VARIANTS.items()):
                trial = f"{variant}-{r}-{safe}"
                hp = {"variant": variant, "method": "sage", "lambda_esp": 2.0, "lambda_lsa": 0.1, "alpha": 1.0,
                      "lambda_safe": safe, "local_k": 10, "lr": 5e-5, **sets}
                util = UTIL[variant] + r / 100 + (safe - 0.3)
                for step in (40, 80):
                    rows.append({"sweep_id": "abl", "trial_id": trial, "step": step, "fidelity": "text",
                                 "status": "finished" if step == 80 else "running", **hp,
                                 **_iv("matched_auc", 0.6 - i / 50), **_iv("util_sib", util + step / 1000),
                                 **_iv("attack_auc", 0.7), "spread_ratio": 1.0 + i / 10, "spread_dev": i / 10,
                                 "jaccard": 0.3 + i / 20, "asr_text": 0.0, "util_text": 0.99, "loss": 1.0 + i,
                                 "checkpoint": f"/ckpt/{trial}"})
    return rows


@pytest.fixture()
def components(tmp_path: Path) -> Path:
    ResultStore(tmp_path / "results").write(_rows())
    return tmp_path


def _sage(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_variant_table_lists_every_variant_with_what_it_sets(components: Path):
    df = ablation_frame(components, param="variant")
    assert sorted(df["variant"]) == sorted(VARIANTS) and list(df["n"]) == [1] * 5
    by = df.set_index("variant")
    # the columns each variant sets are shown, not used to drop it
    assert set(df.attrs["set_by"]) == {"lambda_esp", "lambda_lsa", "alpha"}
    assert by.loc["DES", "method"] == "des" and by.loc["SAGE", "method"] == "sage"
    assert (by.loc["DES", "lambda_esp"], by.loc["DES+LSA", "lambda_lsa"], by.loc["SAGE-alpha0", "alpha"]) == (0.0, 0.1, 0.0)
    # the final text row of each trial (step 80), with its interval
    for v in VARIANTS:
        assert by.loc[v, "util_sib"] == pytest.approx(UTIL[v] + 0.08)
        assert by.loc[v, "util_sib_lo"] == pytest.approx(UTIL[v] + 0.05)
    assert by.loc["DES", "util_sib"] < by.loc["SAGE", "util_sib"]
    assert "local_k fixed at 10 in every trial (default 15)" in df.attrs["notes"]


def test_headline_columns_first_and_the_rest_on_request(components: Path):
    head = list(ablation_frame(components, param="variant").columns)
    metrics = [c for c in head if c not in ("variant", "n", "method", "lambda_esp", "lambda_lsa", "alpha")]
    assert metrics == ["matched_auc", "matched_auc_lo", "matched_auc_hi", "util_sib", "util_sib_lo", "util_sib_hi",
                       "spread_ratio", "spread_dev", "jaccard"]
    full = list(ablation_frame(components, param="variant", all_columns=True).columns)
    assert full[:len(head)] == head and {"asr_text", "util_text", "loss", "attack_auc"} <= set(full[len(head):])
    # the sweep's own objectives replace the registry's defaults at the front
    other = list(ablation_frame(components, param="variant", objectives=["attack_auc", "util_sib"]).columns)
    assert [c for c in other if c in ("attack_auc", "util_sib", "matched_auc")] == ["attack_auc", "util_sib"]


def test_markdown_folds_intervals_and_csv_keeps_them(components: Path):
    df = ablation_frame(components, param="variant")
    md = to_markdown(df)
    header = md.splitlines()[0]
    assert "util_sib_lo" not in header and "| util_sib |" in header
    des = next(line for line in md.splitlines() if line.startswith("| DES |"))
    assert fmt_interval(UTIL["DES"] + 0.08, UTIL["DES"] + 0.05, UTIL["DES"] + 0.11) in des
    assert "0.490 [0.460, 0.520]" in des  # the same, written out
    assert "Set by each variant: lambda_esp, lambda_lsa, alpha." in md
    csv = analysis.ablation_table(components, param="variant", fmt="csv")
    assert csv.splitlines()[0].startswith("variant,n,method,")
    assert "util_sib,util_sib_lo,util_sib_hi" in csv.splitlines()[0]


def test_repeats_average_values_and_bounds_and_a_crossed_parameter_is_held_at_its_default(tmp_path: Path):
    ResultStore(tmp_path / "results").write(_rows(repeats=2, crossed=(0.3, 0.5)))
    df = ablation_frame(tmp_path, param="variant").set_index("variant")
    # lambda_safe varies inside each variant: held at its default 0.3, so two repeats per variant
    assert list(df["n"]) == [2] * 5 and "lambda_safe" not in df.columns
    assert df.loc["SAGE", "util_sib"] == pytest.approx((UTIL["SAGE"] + 0.08 + UTIL["SAGE"] + 0.09) / 2)
    assert df.loc["SAGE", "util_sib_lo"] == pytest.approx((UTIL["SAGE"] + 0.05 + UTIL["SAGE"] + 0.06) / 2)
    assert "lambda_safe = 0.3" in df.attrs["notes"]


def test_cli_ablation_reads_the_sweeps_objectives_and_all_columns(components: Path, capsys):
    code, out, err = _sage(capsys, "ablation", str(components), "--param", "variant")
    assert code == 0, err
    assert all(f"| {v} |" in out for v in VARIANTS) and "asr_text" not in out and "loss" not in out
    code, out, _ = _sage(capsys, "ablation", str(components), "--param", "variant", "--all-columns")
    assert code == 0 and "asr_text" in out and "loss" in out
    spec = {"name": "abl", "objectives": [{"metric": "attack_auc"}, {"metric": "util_sib"}],
            "fidelity": {"text_every": 40}, "storage": str(components)}
    (components / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, _ = _sage(capsys, "ablation", str(components), "--param", "variant")
    header = out.splitlines()[0]
    assert code == 0 and "attack_auc" in header and "matched_auc" not in header
    assert "0.700 [0.670, 0.730]" in out
    (components / "spec.yaml").write_text("objectives: [")
    code, _, err = _sage(capsys, "ablation", str(components), "--param", "variant")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "spec.yaml" in err and "Traceback" not in err


def test_pareto_cli_and_report_show_intervals(components: Path, tmp_path: Path, capsys):
    code, out, err = _sage(capsys, "pareto", str(components), "--x", "matched_auc", "--y", "util_sib")
    assert code == 0, err
    front = analysis.pareto_front(components, x="matched_auc", y="util_sib")
    for _, row in front.iterrows():
        assert fmt_interval(row["util_sib"], row["util_sib_lo"], row["util_sib_hi"]) in out
    assert "95% bootstrap intervals; the front ranks point estimates" in out
    page = analysis.write_report(components, tmp_path / "rep").read_text()
    sage = _rows()[-1]
    assert fmt_interval(sage["util_sib"], sage["util_sib_lo"], sage["util_sib_hi"]) in page
    assert "Ablation: variant" in page and (tmp_path / "rep" / "ablation_variant.png").stat().st_size > 5000


def test_status_front_shows_intervals():
    from sweeps.status import SweepStatus, format_status

    row = {"trial_id": "t1", "step": 80, "concept_auc": 0.612, "concept_auc_lo": 0.581, "concept_auc_hi": 0.64,
           "util_sib": 0.5, "util_sib_lo": None, "util_sib_hi": None}
    st = SweepStatus(storage="/x", sweep_id="s", state="finished", objectives=[("concept_auc", "min"),
                     ("util_sib", "max")], trials={"finished": 1}, front=[row])
    text = format_status(st)
    line = next(line for line in text.splitlines() if line.strip().startswith("t1"))
    assert "0.612 [0.581, 0.640]" in line and line.split()[-1] == "0.5"  # no bounds: the value alone
    assert "the scheduler ranks point estimates" in text


def test_interval_frame_keeps_order_and_formats_every_cell():
    import pandas as pd

    df = pd.DataFrame({"a": [1.0, None], "a_lo": [0.5, None], "a_hi": [1.5, None], "b": [250.0, 3.0],
                       "b_lo": [200.0, 2.0], "b_hi": [300.0, 4.0], "name": ["x", "y"]})
    shown = interval_frame(df)
    assert list(shown.columns) == ["a", "b", "name"]
    assert shown["a"].tolist() == ["1.000 [0.500, 1.500]", "–"]
    assert shown["b"].tolist() == ["250 [200, 300]", "3.000 [2.000, 4.000]"]
