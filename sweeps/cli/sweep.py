"""``sage sweep run|resume|status|stop|validate``: thin wrappers over ``sweeps.runner`` / ``sweeps.status``."""

from __future__ import annotations

import typer

from sage_core.defs.config import parse_overrides
from sweeps.cli.common import SKIP_BAD_HELP
from sweeps.paths import check_arg
from sweeps.spec import describe, load_validated_spec
from sweeps.status import format_status, request_stop, sweep_status
from sweeps.warm_start import load_and_plan

sweep_app = typer.Typer(
    name="sweep",
    help="Run, resume, inspect and stop hyperparameter sweeps (Ray Tune + Optuna, Pareto successive "
    "halving).\n\nA SPEC is a shipped spec name (quickstart, paper-default, des-baseline, "
    "ablation-lambda-esp, pareto-search, ...) or a YAML path. Example: `sage sweep run quickstart "
    "--storage runs/demo`.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_SET_HELP = ("Override a spec value, repeatable. Dotted paths reach into the spec "
             "(--set search.num_samples=8, --set fidelity.text_every=10); a bare TrainConfig field "
             "sets it for every trial (--set lr=1e-4 is --set train.lr=1e-4).")
_WARM_START_HELP = ("Seed the search with the results of an earlier sweep (its storage folder) that trained the "
                    "same encoder on the same prompt data for the same objectives; checked before anything "
                    "starts. Same as --set search.warm_start=DIR. Example: --warm-start runs/demo")


@sweep_app.command("run")
def run_cmd(
    spec: str = typer.Argument(..., help="Spec name (e.g. quickstart) or path to a spec YAML."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    storage: str | None = typer.Option(
        None, "--storage", help="Sweep folder (local/shared path or s3://... URI); overrides the spec's "
        "storage. Example: --storage runs/demo"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to attach to: 'auto' (the cluster this node belongs to) or "
        "HOST:PORT; default RAY_ADDRESS, else a small local Ray. Example: --address auto"),
    num_cpus: float | None = typer.Option(
        None, "--num-cpus", help="CPUs of the local Ray (default: cpus per trial x max_concurrent)."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Cache of base embeddings, codebook and evaluator data, reused by every "
        "sweep on the same encoder and prompts (default $SAGE_CACHE_DIR, else ~/.cache/sage-sweeps); on a "
        "cluster, a folder every node sees. Same as --set train.cache_dir=DIR."),
    warm_start: str | None = typer.Option(None, "--warm-start", help=_WARM_START_HELP),
) -> None:
    """Validate SPEC, then run the sweep; results go to STORAGE/results, the live table shows the
    objectives. Interrupt with Ctrl+C or `sage sweep stop STORAGE`; finish with `sage sweep resume`."""
    from sweeps.runner import run  # lazy: ray (~0.7 s), off `sage` start-up

    spec, storage = _checked(spec, storage)
    overrides = parse_overrides(set_)
    if cache_dir is not None:
        overrides["train.cache_dir"] = cache_dir
    _set_warm_start(overrides, warm_start)
    outcome = run(spec, overrides=overrides, storage=storage, address=address, num_cpus=num_cpus)
    typer.echo(outcome.summary())
    if outcome.state != "finished":
        raise typer.Exit(1)


@sweep_app.command("resume")
def resume_cmd(
    storage: str = typer.Argument(..., help="The sweep folder, e.g. runs/demo."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Also restart trials that failed (from their last checkpoint)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to attach to, e.g. auto."),
    num_cpus: float | None = typer.Option(None, "--num-cpus", help="CPUs of the local Ray."),
) -> None:
    """Finish an interrupted or stopped sweep: finished trials are kept, unfinished ones continue
    from their last checkpoint. When every trial had finished, only the image stage
    (fidelity.image) runs, for the survivors without an image row. Example: `sage sweep resume runs/demo`."""
    from sweeps.runner import resume  # lazy: ray (~0.7 s), off `sage` start-up

    outcome = resume(_sweep_folder(storage), retry_failed=retry_failed, address=address, num_cpus=num_cpus)
    typer.echo(outcome.summary())
    if outcome.state != "finished":
        raise typer.Exit(1)


@sweep_app.command("status")
def status_cmd(
    storage: str = typer.Argument(..., help="The sweep folder, e.g. runs/demo."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """Running / finished / pruned / failed trials (with reasons) and the current Pareto front.
    Works while the sweep runs. Example: `sage sweep status runs/demo`."""
    typer.echo(format_status(sweep_status(_sweep_folder(storage), skip_bad=skip_bad)))


@sweep_app.command("stop")
def stop_cmd(storage: str = typer.Argument(..., help="The sweep folder, e.g. runs/demo.")) -> None:
    """Ask the running sweep to stop gracefully (it checkpoints and exits; resume later).
    Example: `sage sweep stop runs/demo`."""
    from sweeps.runner import resume_command  # lazy: ray (~0.7 s), off `sage` start-up

    path = request_stop(_sweep_folder(storage))
    typer.echo(f"stop requested ({path}); the driver stops within a few seconds. "
               f"Continue later with: {resume_command(storage)}")


@sweep_app.command("validate")
def validate_cmd(
    spec: str = typer.Argument(..., help="Spec name (e.g. pareto-search) or path to a spec YAML."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    storage: str | None = typer.Option(None, "--storage", help="Check this storage instead of the spec's."),
    warm_start: str | None = typer.Option(None, "--warm-start", help=_WARM_START_HELP),
) -> None:
    """Check SPEC without starting Ray: unknown keys, bad ranges, every trial configuration
    (e.g. local_k >= batch_size), objectives no evaluator produces, unreachable storage, and the
    earlier sweep of search.warm_start. All problems are listed at once. Example:
    `sage sweep validate ablation-local-k`."""
    spec, storage = _checked(spec, storage)
    overrides = parse_overrides(set_)
    _set_warm_start(overrides, warm_start)
    checked, coverage = load_validated_spec(spec, overrides=overrides, storage=storage)
    warm = load_and_plan(checked) if checked.search.warm_start else None
    typer.echo(describe(checked, coverage))
    if warm is not None:
        typer.echo("\n".join([warm[0].summary(), *warm[1].notes]))


def _checked(spec: str, storage: str | None) -> tuple[str, str | None]:
    """SPEC and --storage once the operating system can name them (the spec check then tests that
    the storage can be written)."""
    return check_arg(spec, option="SPEC"), check_arg(storage, option="--storage") if storage is not None else None


def _set_warm_start(overrides: dict, warm_start: str | None) -> None:
    """``--warm-start DIR`` is ``--set search.warm_start=DIR`` (once the operating system can name DIR)."""
    if warm_start is not None:
        overrides["search.warm_start"] = _sweep_folder(warm_start, option="--warm-start")


def _sweep_folder(storage: str, *, option: str = "STORAGE") -> str:
    return check_arg(storage, option=option)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
