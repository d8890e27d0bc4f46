"""docs/cli-reference.md, made from the command line's own parser, so the reference cannot
drift from the commands: `python -m edgegen.cli_reference > docs/cli-reference.md`
(tests/test_readme.py checks the file is current)."""

from __future__ import annotations

import argparse
import os

WIDTH = "100"   # argparse wraps help to $COLUMNS: fixed, so the file is the same on every machine


def cli_reference() -> str:
    from .cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sections = [f"## edgegen {name}\n\n```text\n{sub.format_help().rstrip()}\n```\n"
                    for name, sub in commands.choices.items()]
        head = parser.format_help().rstrip()
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return ("# edgegen command reference\n\nGenerated from the parser by `python -m edgegen.cli_reference > "
            "docs/cli-reference.md`; every option shows its default. Worked examples: [cli.md](cli.md).\n\n"
            f"```text\n{head}\n```\n\n" + "\n".join(sections))


if __name__ == "__main__":
    print(cli_reference(), end="")
