"""`sage pareto`, `sage ablation`, `sage sql`, `sage report`: thin wrappers over :mod:`analysis`.

RESULTS is the dataset root (folders ``sweep_id=...``) or a sweep/storage folder holding
``results/``, or an object-storage URI. duckdb, pandas and matplotlib load inside the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer

import analysis
from analysis.ablation import PAPER_DEFAULTS, hyperparameters
from analysis.column_roles import roles_of
from analysis.pareto import nadir
from analysis.plots import pareto_plot
from analysis.sandbox import Limits
from analysis.sql import check_limit, run_query
from analysis.views import default_objectives
from sage_core.defs.errors import QueryError
from sweeps.cli.common import RESULTS_HELP, SKIP_BAD_HELP, duckdb_errors, print_frame
from sweeps.cli.reliability_cmd import front_checks
from sweeps.paths import check_arg, output_dir, output_file
from sweeps.spec import spec_from_text
from sweeps.sweep_files import read_small_text

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
ABLATION_HELP = f"""Print the appendix-style ablation table of one hyperparameter: one row per value, the
objectives (the sweep's, read from its spec.yaml when RESULTS is a sweep folder) and the paper's
geometry diagnostics, as value [95% interval] where the rows carry one.

The other hyperparameters are held at the sweep's own base configuration: the values its
schema.json records (in a quickstart sweep, the quickstart preset's local_k=10, not the paper's
15). A hyperparameter that takes one value in every trial is never used to filter; it is named
under the table when that value is not the base one. Results written before sweeps recorded
schema.json are held at the official SAGE run instead
({", ".join(f"{name}={value:g}" for name, value in PAPER_DEFAULTS.items())}). --default overrides
either.

--vs VALUE compares every other row with the row of that value, objective by objective: a column
Δ<objective> vs VALUE holds the row minus that row with a 95% interval from a paired bootstrap over
the prompts (every trial of a sweep is scored on the same prompts, kept in its prompt_scores/
folder), tighter than the two rows' own intervals suggest; * marks an interval that excludes 0. Rows
with several trials (seeds) are averaged replicate by replicate, so the interval covers the
prompts, not seed-to-seed variation (sage reliability measures that). Rows whose trials have no
per-prompt scores get an empty cell and a note under the table.

\b
Example: sage ablation runs/demo --param lambda_esp --format md
Example: sage ablation runs/ablation-components-cpu --param variant --all-columns
Example: sage ablation runs/ablation-components-cpu --param variant --vs DES
"""


def pareto(
    results: str = typer.Argument(..., help=RESULTS_HELP),
    x: str | None = typer.Option(
        None, "--x", help="First objective (direction from the metric registry). Default: asr, or matched_auc "
        "when only text-level metrics exist. Example: --x matched_auc"
    ),
    y: str | None = typer.Option(
        None, "--y", help="Second objective. Default: tifa, or util_sib for text level. Example: --y util_sib"
    ),
    extra: str | None = typer.Option(
        None, "--extra", help="Optional third objective for a 3-D front. Example: --extra fid"
    ),
    by: str | None = typer.Option(
        None, "--by", help="One front per value of: method, sweep, or any hyperparameter column. Example: --by local_k"
    ),
    fidelity: str | None = typer.Option(
        None, "--fidelity",
        help="Keep only text or image rows; also picks the default objective pair. Example: --fidelity text"
    ),
    all_steps: bool = typer.Option(
        False, "--all-steps", help="Use every reported step of each trial, not only its last one."
    ),
    plot: Path | None = typer.Option(
        None, "--plot",
        help="Also write a PNG plot (paper rows overlaid where they have the metrics). Example: --plot front.png"
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """Print the Pareto front of two objectives (default: minimise ASR, maximise TIFA).

    Example: sage pareto runs/demo --x matched_auc --y util_sib --plot runs/demo/pareto.png
    """
    results = _results_path(results)
    with output_file(plot, option="--plot", suffixes=PLOT_SUFFIXES) as plot_path:
        _pareto(results, x=x, y=y, extra=extra, by=by, fidelity=fidelity, all_steps=all_steps, plot=plot_path,
                skip_bad=skip_bad)


def _pareto(results: str, *, x: str | None, y: str | None, extra: str | None, by: str | None,
            fidelity: str | None, all_steps: bool, plot: Path | None, skip_bad: bool) -> None:
    with duckdb_errors():
        got = _front(results, x=x, y=y, extra=extra, by=by, fidelity=fidelity, all_steps=all_steps,
                     skip_bad=skip_bad)
    front, ranked, reported, x, y = got.front, got.ranked, got.reported, got.x, got.y
    if front.empty:
        typer.echo(f"no rows with both {x} and {y} (after filters); nothing on the front")
        return
    group = {"sweep": "sweep_id"}.get(by, by) if by else None
    objs = [x, y] + ([extra] if extra else [])
    show = [c for c in ([group] if group else []) + ["sweep_id", "trial_id", "step", "fidelity", "method"]
            if c and c in front.columns]
    varied = got.varied
    shown_objs = [c for o in objs for c in (o, f"{o}_lo", f"{o}_hi") if c in front.columns]
    show = list(dict.fromkeys(show + shown_objs + varied))
    checks = front_checks(results, ranked=ranked, objectives=objs, group=group, skip_bad=skip_bad)
    print_frame(checks.mark(front[show]), title=f"Pareto front: {x} vs {y}" + (f" vs {extra}" if extra else ""),
                 intervals=True)

    hv = analysis.hypervolume(front, x=x, y=y, extra=extra, ref=nadir(ranked, x=x, y=y, extra=extra))
    typer.echo(f"{len(front)} of {len(ranked)} trials on the front; hypervolume against the trials' nadir: {hv:.4g}")
    if any(f"{o}_lo" in front.columns for o in objs):
        typer.echo("[lo, hi]: 95% bootstrap intervals; the front ranks point estimates, so trials whose intervals "
                   "overlap may swap places under another draw of prompts")
    checks.echo()
    if plot is not None:
        path = pareto_plot(ranked, front, x=x, y=y, path=plot, by=group, reported=reported)
        typer.echo(f"plot written to {path}")


def _results_path(results: str) -> str:
    """RESULTS as given, once the operating system can name it (a URI is left to pyarrow)."""
    return check_arg(results, option="RESULTS")


@dataclass
class _Front:
    front: Any
    ranked: Any
    reported: Any
    x: str
    y: str
    varied: list[str]  # hyperparameters (declared in the sweep's schema.json, else inferred) that vary


def _front(results, *, x, y, extra, by, fidelity, all_steps, skip_bad) -> _Front:
    con = analysis.connect(results, skip_bad=skip_bad)
    try:
        if x is None or y is None:
            dx, dy = default_objectives(con, fidelity)
            x, y = x or dx, y or dy
        steps: Literal["last", "all"] = "all" if all_steps else "last"
        ranked = analysis.pareto_ranks(con, x=x, y=y, by=by, fidelity=fidelity, extra=extra, steps=steps)
        reported = con.sql("SELECT * FROM reported").df()
        varied = [h for h in hyperparameters(list(ranked.columns), roles_of(con)) if ranked[h].nunique(dropna=True) > 1]
    finally:
        con.close()
    return _Front(front=ranked[ranked["front"] == 1].drop(columns="front"), ranked=ranked, reported=reported,
                  x=x, y=y, varied=varied)


def ablation(
    results: str = typer.Argument(..., help=RESULTS_HELP),
    param: str = typer.Option(..., "--param", help="Hyperparameter to vary. Example: --param lambda_esp"),
    fmt: str = typer.Option("md", "--format", help="md (Markdown table) or csv. Example: --format csv"),
    default: list[str] = typer.Option(
        [], "--default", help="Hold another hyperparameter at NAME=VALUE instead of at the sweep's base "
        "configuration (see above). Repeatable. Example: --default local_k=10"
    ),
    all_columns: bool = typer.Option(
        False, "--all-columns", help="Every metric column of the store, after the objectives and the geometry "
        "diagnostics (which are all that is shown without it)."
    ),
    vs: str | None = typer.Option(
        None, "--vs", help="Add the paired difference of every other row from the row with this value of "
        "--param (see above). Example: --vs DES"
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """``sage ablation``; what the user reads is ABLATION_HELP."""
    if fmt not in ("md", "csv"):
        raise QueryError(f"--format {fmt!r} is not allowed (allowed: md, csv)")
    defaults: dict[str, float] = {}
    for item in default:
        name, sep, value = item.partition("=")
        try:
            defaults[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise QueryError(f"--default {item!r} is not NAME=NUMBER (example: --default local_k=10)")
    results = _results_path(results)
    with duckdb_errors():
        table_fmt: Literal["md", "csv"] = "csv" if fmt == "csv" else "md"  # fmt was checked above
        text = analysis.ablation_table(results, param=param, fmt=table_fmt, defaults=defaults, skip_bad=skip_bad,
                                       objectives=_spec_objectives(results), all_columns=all_columns, vs=vs)
    typer.echo(text, nl=False)


def _spec_objectives(results: str) -> list[str] | None:
    """The objectives of the sweep whose folder RESULTS is (or whose results/ it is), from its saved
    spec.yaml; None (the registry's defaults) for a bare dataset or a URI."""
    if "://" in results:
        return None
    path = Path(results).expanduser()
    for folder in (path, path.parent) if path.name == "results" else (path,):
        spec_file = folder / "spec.yaml"
        if spec_file.is_file() and (folder / "results").is_dir():
            text = read_small_text(str(spec_file)) or ""  # bounded, UTF-8 checked: one-line errors
            return spec_from_text(text, where=f"saved spec {spec_file}").objective_metrics()
    return None


def sql(
    results: str = typer.Argument(..., help=RESULTS_HELP),
    query: str = typer.Argument(
        ..., help="One read-only SELECT/WITH statement over the views `results` and `reported`. "
        "Example: \"SELECT method, count(*) FROM results GROUP BY method\""
    ),
    limit: int = typer.Option(
        200, "--limit", help="Print at most this many rows (1 to 1,000,000). Example: --limit 20"),
    fmt: str = typer.Option("table", "--format", help="table (aligned) or csv. Example: --format csv"),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Stop the query after this many seconds of wall-clock time. Example: --timeout 10"
    ),
    memory: str = typer.Option("2GB", "--memory", help="DuckDB memory limit (spills to a private temp folder "
                               "beyond it). Example: --memory 512MB"),
    threads: int = typer.Option(2, "--threads", help="DuckDB worker threads. Example: --threads 4"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """Run one read-only SQL query (DuckDB) over the results, in a sandbox: no file or network
    access, no extensions, locked settings, bounded memory, threads and time.

    Example: sage sql runs/demo "SELECT trial_id, matched_auc, util_sib FROM results ORDER BY util_sib DESC LIMIT 5"
    """
    if fmt not in ("table", "csv"):
        raise QueryError(f"--format {fmt!r} is not allowed (allowed: table, csv)")
    check_limit(limit)
    limits = Limits(memory=memory, threads=threads, timeout_s=timeout)
    results = _results_path(results)
    result = run_query(results, query, skip_bad=skip_bad, limit=limit, limits=limits)
    df = result.frame
    more = f"more rows than --limit {limit}; only the first {limit} are shown (raise --limit)"
    if fmt == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
        if result.truncated:
            typer.echo(f"note: {more}", err=True)
    else:
        print_frame(df, max_rows=limit)
        if result.truncated:
            typer.echo(more)


def report(
    results: str = typer.Argument(..., help=RESULTS_HELP),
    out: Path = typer.Option(
        ..., "--out", help="Folder for index.html and its PNG plots. Example: --out runs/demo/report"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """Write a static HTML report (fronts with paper rows overlaid, ablations, statuses, best checkpoints).

    Example: sage report runs/demo --out runs/demo/report   (then open runs/demo/report/index.html)
    """
    results = _results_path(results)
    with output_dir(out, option="--out") as folder, duckdb_errors():
        page = analysis.write_report(results, folder, skip_bad=skip_bad)
    typer.echo(f"report written to {page}")


def register(app: typer.Typer) -> None:
    app.command("pareto")(pareto)
    app.command("ablation", help=ABLATION_HELP)(ablation)
    app.command("sql")(sql)
    app.command("report")(report)
