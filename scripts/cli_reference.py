"""Write docs/CLI.md, the reference of `python -m sparsenets`, from the CLI's own parser.

The reference is generated, so it cannot drift from the code: tests/test_docs.py renders it again and
fails when the file differs. After changing a command or an option, run

    .venv/bin/python scripts/cli_reference.py          # rewrites docs/CLI.md
    .venv/bin/python scripts/cli_reference.py --check  # exit 1 if docs/CLI.md is stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "CLI.md"


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser, by name, in the order the CLI defines them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a user can give (argparse's own -h left out)."""
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _spelling(action: argparse.Action) -> str:
    metavar = action.metavar if action.metavar is not None else action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if not action.option_strings:
        return f"`{action.dest if action.metavar is None else metavar}`" + (" …" if action.nargs in ("+", "*") else "")
    name = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{name}`"
    many = " …" if action.nargs in ("+", "*") or isinstance(action.metavar, tuple) else ""
    return f"`{name} {metavar}`{many}"


def _default(action: argparse.Action) -> str:
    if action.required or not action.option_strings:
        return "required"
    if action.nargs == 0 or action.default in (None, "", [], {}, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def render() -> str:
    """The markdown reference: one table of commands, then every command's options with their help."""
    sys.path.insert(0, str(REPO / "src"))
    from sparsenets.cli import build_parser

    parser = build_parser()
    subs = commands(parser)
    lines = ["# Command line reference: `python -m sparsenets`", "",
             "Generated from the CLI's parser by `scripts/cli_reference.py`; `tests/test_docs.py` fails when it is "
             "stale. Each Snakemake rule runs one of these commands; all of them run by hand too, with the venv's "
             "Python (`.venv/bin/python -m sparsenets CMD --help`).", "",
             "Every command takes `--debug` (" + _cell(next(a.help for a in options(parser) if a.dest == "debug"))
             + "). An expected error (a bad key, value or file) prints one line naming it and exits with 1.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(sub.description)} |" for name, sub in subs.items()]
    for name, sub in subs.items():
        lines += ["", f"## {name}", "", _cell(sub.description), "", "| argument | default | what it is |",
                  "|---|---|---|"]
        lines += [f"| {_spelling(a)} | {_default(a)} | {_cell(a.help)} |" for a in options(sub) if a.dest != "debug"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="only compare: exit 1 if docs/CLI.md is stale")
    a = args.parse_args(argv)
    text = render()
    if a.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run .venv/bin/python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
