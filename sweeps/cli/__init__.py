"""The ``sage`` command line: a thin layer over the Python APIs.

Each command group lives in its own module with a ``register(app)`` function. Heavy imports
(torch, ray, duckdb) happen inside the commands, so ``sage --help`` is instant.
Any :class:`sage_core.defs.errors.SageError` becomes one line on stderr and exit code 2; so does a
usage mistake found by click (unknown option, value of the wrong type), with the command's ``--help``
named.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType

import typer

from sage_core.defs.errors import SageError

app = typer.Typer(
    name="sage",
    help="Sweeps, Pareto fronts and ablations for SAGE text-encoder safety alignment.\n\n"
    "Start with `sage train` (a quickstart run in minutes on a CPU) or "
    "`sage sweep run quickstart`; `sage COMMAND --help` explains each command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register_all() -> None:
    for name in ("train", "doctor", "evaluate", "sweep", "analysis_cmds", "metrics_cmd", "reliability_cmd"):
        try:
            module = importlib.import_module(f"sweeps.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sweeps.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(app)


_register_all()


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's exception root, named once: the user's mistake or a reported failure, printed
    as one line without a traceback (``analysis``'s errors are a branch of it)."""
    return (SageError,)


def one_line(text: object) -> str:
    """The message as one line: inner newlines (e.g. from a library) become '; '."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts) or type(text).__name__


def _click_exceptions() -> ModuleType:
    """The exception module of the click that typer runs on (recent typer vendors its own)."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - typer on the click package
        return importlib.import_module("click.exceptions")


def _abort_type() -> type[BaseException]:
    """click's Abort, wherever this typer keeps it (recent typer: ``typer.exceptions``)."""
    for module in ("typer.exceptions", "typer._click.exceptions", "click.exceptions"):
        try:
            return __import__(module, fromlist=["Abort"]).Abort
        except (ImportError, AttributeError):
            continue
    return KeyboardInterrupt  # pragma: no cover


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as the CLI prints it: ``warning: <message>`` on one line (not Python's
    ``file:line: Category: message`` followed by the source line)."""
    return f"warning: {one_line(message)}\n"


def main(argv: list[str] | None = None) -> None:
    """``sage ARGV``; warnings are shown as one line each while it runs."""
    previous, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: list[str] | None) -> None:
    click = _click_exceptions()

    # Nothing downloads at run time: models come from local folders or packages.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    errors = user_errors()
    try:
        code = app(args=argv, prog_name="sage", standalone_mode=False)
    except errors as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(2)
    except click.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        typer.echo(f"error: {one_line(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        typer.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, _abort_type()):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if code == 130:
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
