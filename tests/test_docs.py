"""The documentation lives in the repository and agrees with it.

- every relative link and every file reference in README.md and docs/*.md resolves, anchors
  included (GitHub's heading slugs);
- every citation of ``method.md`` in the tree names ``docs/method.md`` and a section it has;
- the defaults, presets and reported numbers that docs/method.md lists equal the code and
  ``analysis/data/reported.csv``;
- docs/cli.md is exactly what ``sweeps.cli.reference`` renders from ``--help`` now.

The checkers are tested on planted mistakes too, so a checker that passes everything fails here.
"""

from __future__ import annotations

import csv
import glob
import itertools
import math
import re
import typing
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
METHOD = ROOT / "docs" / "method.md"
# Top-level entries a file reference may start with: what the repository holds, not what runs make.
NOT_REPO = {".git", ".venv", ".cache", ".pytest_cache", "runs", "__pycache__"}
TOP = {p.name for p in ROOT.iterdir() if p.name not in NOT_REPO and not p.name.endswith(".egg-info")}
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


# ------------------------------------------------------------------ helpers


def split_fences(text: str) -> tuple[str, str]:
    """(prose, code): the lines outside fenced code blocks and the lines inside them."""
    prose, code, inside = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        (code if inside else prose).append(line)
    return "\n".join(prose), "\n".join(code)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path: Path) -> list[str]:
    """Relative links of ``path`` whose file, folder or heading does not exist."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    prose = CODE_SPAN.sub("", prose)  # `[x](y)` inside inline code is not a link
    problems = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.name}: link {target!r}: no such file or folder")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{path.name}: link {target!r}: {dest.name} has no heading with anchor #{anchor}")
    return problems


def _expand_braces(token: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [x for alt in m.group(1).split(",") for x in _expand_braces(token[:m.start()] + alt + token[m.end():])]


def file_references(text: str) -> set[str]:
    """Paths in inline code and code blocks that name something in this repository: the first path
    component is a top-level entry of the repository (``sweeps/specs/quickstart.yaml``,
    ``bench/RESULTS.md``, ``Makefile``). Placeholders (``<storage>/...``) and URLs are not paths."""
    prose, code = split_fences(text)
    chunks = CODE_SPAN.findall(prose) + [code]
    refs = set()
    for token in itertools.chain.from_iterable(re.split(r"[\s\"'=()\[\];]+", c) for c in chunks):
        token = token.split("::")[0].strip("`.:;,")
        if not token or any(ch in token for ch in "<>$~|") or "://" in token or "..." in token:
            continue
        if token.split("/")[0] in TOP and ("/" in token or "." in token or token in TOP):
            refs.update(_expand_braces(token))
    return refs


def missing_files(refs: set[str]) -> list[str]:
    return sorted(r for r in refs if not glob.glob(str(ROOT / r)))


# ------------------------------------------------------------------ the checkers work


def test_slug_matches_github_on_headings_of_this_repository() -> None:
    # Anchors GitHub generates for these headings (punctuation dropped, each space a hyphen).
    assert slug("Paper scale on CPU (`bench/bench_step.py --encoder sd14-init`) and `make gpu-check`") == \
        "paper-scale-on-cpu-benchbench_steppy---encoder-sd14-init-and-make-gpu-check"
    assert slug("Pareto front + hypervolume (`bench/bench_pareto.py`)") == "pareto-front--hypervolume-benchbench_paretopy"
    assert slug("5. Defaults and where each comes from") == "5-defaults-and-where-each-comes-from"
    assert slug("What `make demo` printed") == "what-make-demo-printed"


def test_checkers_catch_planted_mistakes(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Real heading\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#real-heading) [self](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#not-a-heading) [bad self](#nope)\n"
        "`[not](a-link.md)`\n"
    )
    problems = link_problems(page)
    assert len(problems) == 3, problems
    assert any("missing.md" in p for p in problems)
    assert any("#not-a-heading" in p for p in problems)
    assert any("#nope" in p for p in problems)

    refs = file_references(
        "see `sweeps/specs/quickstart.yaml`, `bench/RESULTS.md` and `sweeps/specs/nope.yaml`;\n"
        "`sage_core/evaluation/{generation,nudity}.py`, `tests/test_docs.py::test_x`, `runs/demo/x`,\n"
        "`<storage>/results`, `s3://bucket/x`, `Makefile`\n```\nsage sweep run sweeps/specs/gone.yaml\n```\n"
    )
    assert refs == {"sweeps/specs/quickstart.yaml", "bench/RESULTS.md", "sweeps/specs/nope.yaml",
                    "sage_core/evaluation/generation.py", "sage_core/evaluation/nudity.py",
                    "tests/test_docs.py", "Makefile", "sweeps/specs/gone.yaml"}
    assert missing_files(refs) == ["sweeps/specs/gone.yaml", "sweeps/specs/nope.yaml"]


# ------------------------------------------------------------------ the documentation


def test_readme_is_short_and_the_docs_pages_exist() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/ (at most 250)"
    for page in ("method", "install", "training", "evaluation", "sweeps", "analysis", "clusters",
                 "security", "gpu", "benchmarks", "cli"):
        assert (ROOT / "docs" / f"{page}.md").is_file(), page


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(path: Path) -> None:
    assert link_problems(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_file_reference_exists(path: Path) -> None:
    refs = file_references(path.read_text(encoding="utf-8"))
    assert missing_files(refs) == [], f"{path.name} names files that are not in the repository"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        prose, _ = split_fences(page.read_text(encoding="utf-8"))
        for target in LINK.findall(prose):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.suffix == ".md" and dest.parent == ROOT / "docs" and dest.exists():
                todo.append(dest)
    assert {p for p in DOCS if p.parent.name == "docs"} <= reached


def _method_sections() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^## (\d+)\. ", METHOD.read_text(encoding="utf-8"), re.M)}


def test_every_method_citation_names_docs_method_and_an_existing_section() -> None:
    sections = _method_sections()
    assert sections == {str(n) for n in range(1, len(sections) + 1)}, "sections are numbered 1..N"
    files = [p for d in ("sage_core", "sweeps", "analysis", "bench", "clusters", "tests", "docs", "tools")
             for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml", ".md", ".sbatch") and p.is_file()]
    files += [ROOT / "README.md", ROOT / "Makefile", ROOT / "Dockerfile"]
    cited = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"method\.md", text):
            if path == METHOD or path == Path(__file__).resolve():
                continue
            cited += 1
            before = text[max(0, m.start() - 5):m.start()]
            assert before.endswith("docs/") or (path.parent.name == "docs" and not before.endswith("/")), \
                f"{path.relative_to(ROOT)}: cites method.md without its path docs/method.md"
            after = re.match(r"[`)\]]*,?\s*sections?\s+(\d+)(?:\s+and\s+(\d+))?", text[m.end():])
            for number in (after.groups() if after else ()):
                assert number is None or number in sections, \
                    f"{path.relative_to(ROOT)}: cites docs/method.md section {number}, which does not exist"
    assert cited >= 15  # the library, the specs and the docs cite it


# ------------------------------------------------------------------ docs/method.md agrees with the code


def _table_rows(section_title: str) -> list[list[str]]:
    """Cells of the first table after the heading ``section_title`` in docs/method.md."""
    text = METHOD.read_text(encoding="utf-8")
    start = text.index(section_title)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # no header, no separator


def _value(cell: str) -> object:
    value = yaml.safe_load(cell.strip("`"))
    return list(value) if isinstance(value, tuple) else value


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_method_lists_every_trainconfig_default_as_the_code_has_it() -> None:
    from sage_core.defs.config import TrainConfig

    rows = {r[0].strip("`"): r for r in _table_rows("### TrainConfig")}
    assert set(rows) == set(TrainConfig.model_fields), "the table lists every TrainConfig field, no other"
    for name, field in TrainConfig.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        assert _value(rows[name][1]) == _plain(default), name
        assert rows[name][2].startswith(("[code]", "[ours]")), f"{name}: no source"


def test_method_presets_table_matches_the_shipped_presets() -> None:
    from sage_core.defs.config import TrainConfig, preset_path

    rows = _table_rows("### Presets")
    assert len(rows) >= 15
    for column, preset in enumerate(("quickstart", "paper", "des"), start=1):
        shipped = yaml.safe_load(Path(preset_path(preset)).read_text(encoding="utf-8"))
        for row in rows:
            name = row[0].strip("`")
            expected = shipped[name] if name in shipped else TrainConfig.model_fields[name].default
            assert _value(row[column]) == _plain(expected), f"{preset}.{name}"


def test_method_evalconfig_defaults_match_the_code() -> None:
    from sage_core.evaluation.config import EvalConfig

    rows = _table_rows("### This project, image level")
    assert len(rows) >= 8
    for row in rows:
        name = row[0].strip("`")
        assert _value(row[1]) == _plain(EvalConfig.model_fields[name].default), name


def test_method_reported_numbers_equal_reported_csv() -> None:
    with (ROOT / "analysis" / "data" / "reported.csv").open(newline="", encoding="utf-8") as f:
        reported = {row["method"]: row for row in csv.DictReader(f)}
    text = METHOD.read_text(encoding="utf-8")
    section = text[text.index("## 8. "):text.index("## 9. ")]
    shown: set[tuple[str, str]] = set()
    for block in re.findall(r"((?:^\|.*\|\n)+)", section, re.M):
        lines = block.strip().splitlines()
        header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            method = cells[0]
            for column, cell in zip(header[1:], cells[1:]):
                csv_value = reported[method][column]
                assert (cell == "") == (csv_value == ""), (method, column)
                if cell:
                    assert math.isclose(float(cell), float(csv_value), rel_tol=0, abs_tol=0), (method, column)
                    shown.add((method, column))
    in_csv = {(m, c) for m, row in reported.items() for c, v in row.items() if c != "method" and v != ""}
    assert shown == in_csv, f"reported.csv values missing from docs/method.md: {sorted(in_csv - shown)[:5]}"


# ------------------------------------------------------------------ the CLI reference


def test_cli_reference_is_generated_from_the_current_help() -> None:
    from sweeps.cli.reference import render_reference

    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == render_reference(), "docs/cli.md is stale: run `make cli-docs` and commit docs/cli.md"


def _cli_sections() -> dict[str, str]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `([^`]+)`\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("command, option", [
    ("sage pareto", "--skip-bad"), ("sage ablation", "--skip-bad"), ("sage sql", "--skip-bad"),
    ("sage report", "--skip-bad"), ("sage pareto", "--all-steps"), ("sage sql", "--limit"),
    ("sage sql", "--format"), ("sage sql", "--timeout"), ("sage sql", "--memory"), ("sage sql", "--threads"),
    ("sage eval", "--cache-dir"), ("sage eval", "--sweep-id"), ("sage eval", "--calibrate"),
    ("sage sweep run", "--num-cpus"), ("sage doctor", "--skip-deepspeed"), ("sage ablation", "--default"),
])
def test_cli_reference_documents_the_options_users_asked_for(command: str, option: str) -> None:
    assert re.search(rf"^\s+(-\w, )?{re.escape(option)}\b", _cli_sections()[command], re.M), (command, option)


def test_metrics_help_lists_every_fidelity_of_the_registry() -> None:
    from sage_core.defs.metrics import Fidelity

    help_text = " ".join(_cli_sections()["sage metrics"].split())
    values = typing.get_args(Fidelity)
    assert len(values) >= 6
    assert f"Only the metrics of one fidelity: {', '.join(values)}." in help_text


def test_ablation_help_says_the_base_is_the_sweeps_own_config() -> None:
    from analysis.ablation import PAPER_DEFAULTS

    help_text = " ".join(_cli_sections()["sage ablation"].split())
    assert "held at the sweep's own base configuration" in help_text and "schema.json" in help_text
    # the paper's values are named only as the fallback for stores without schema.json
    assert "paper:" not in help_text
    for name, value in PAPER_DEFAULTS.items():
        assert f"{name}={value:g}" in help_text
