"""``sage doctor``: check (and warm up) what a run needs, without downloading anything."""

from __future__ import annotations

import typer

from sweeps.doctor import doctor_checks

HELP = """Check the installation: torch, DeepSpeed (and build its small CPU op once, so
later runs start fast), the embedded encoder, the packaged prompt sets, Ray, DuckDB.
`make env` runs it; run it yourself after moving the environment."""


def register(app: typer.Typer) -> None:
    @app.command("doctor", help=HELP)
    def doctor(skip_deepspeed: bool = typer.Option(False, "--skip-deepspeed", help="Do not initialise DeepSpeed.")
               ) -> None:
        for name, detail in doctor_checks(skip_deepspeed=skip_deepspeed):
            typer.echo(f"  ok   {name:12s} {detail}")
        typer.echo("all checks passed")
