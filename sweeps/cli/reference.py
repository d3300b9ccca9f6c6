"""The CLI reference (``docs/cli.md``), rendered from the ``--help`` of every ``sage`` command.

``make cli-docs`` writes it; ``tests/test_docs.py`` fails when the file and the CLI disagree, so
the reference cannot drift from the code. The help is rendered at a fixed width, independent of
the terminal that runs the generator, so the output is the same on every machine.

Usage: ``python -m sweeps.cli.reference [--write docs/cli.md]`` (without ``--write``: print it).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from sweeps.cli import app

__all__ = ["WIDTH", "render_reference", "iter_help"]

WIDTH = 100
HEADER = """# Command-line reference

Every `sage` command and option, as `--help` prints it. This page is generated: run
`make cli-docs` after changing a command (it runs `python -m sweeps.cli.reference --write
docs/cli.md`); `tests/test_docs.py` fails when this page and the CLI disagree. A user mistake on
any command is one line on stderr and exit code 2.
"""


def _context(command: Any, name: str, parent: Any = None) -> Any:
    # terminal_width/max_width pin the wrapping: click otherwise reads the terminal's size.
    return command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH,
                                 max_content_width=WIDTH)


def _walk(command: Any, ctx: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    yield path, command.get_help(ctx)
    names = command.list_commands(ctx) if hasattr(command, "list_commands") else []
    for name in names:
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        yield from _walk(sub, _context(sub, name, parent=ctx), path + (name,))


def iter_help() -> Iterator[tuple[tuple[str, ...], str]]:
    """(command path, help text) for ``sage`` and every subcommand, depth first, in the CLI's order."""
    root = typer.main.get_command(app)
    yield from _walk(root, _context(root, "sage"), ("sage",))


def render_reference() -> str:
    """The whole of ``docs/cli.md``."""
    parts = [HEADER]
    for path, text in iter_help():
        parts.append(f"## `{' '.join(path)}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the reference to this file instead of printing it")
    args = parser.parse_args(argv)
    text = render_reference()
    if args.write is None:
        print(text, end="")
    else:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")


if __name__ == "__main__":  # pragma: no cover
    main()
