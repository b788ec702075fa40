"""``fedmap-secure schema template|digest``: write a schema file to fill in, print a digest.

``template DIR --label-column Y`` reads only the header of the site files in
``DIR`` and writes ``DIR/schema.toml`` (or ``--out``) with ``nan`` placeholders
that the loader refuses until the operators fill in public values (clinical
ranges, a data dictionary). ``--from-data`` fills in each feature's min and max
over every file instead and prints a warning: those values are a release of the
sites' records and must be replaced by public ones before a private run.
``digest DIR|FILE`` prints the SHA-256 of a schema (``[features] schema_digest``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from fedmap_secure.data.csv_sites import SiteFiles, discover
from fedmap_secure.data.csv_table import read_features
from fedmap_secure.data.schema_file import FILENAME, read_schema_file, template_text
from fedmap_secure.errors import DataError

FROM_DATA_WARNING = (
    "WARNING: the ranges in {path} come FROM THE DATA (min/max of every file); they are a "
    "release of the sites' records outside the privacy ledger: replace them with public values"
)


def add_schema_command(sub: Any) -> None:
    schema = sub.add_parser("schema", help="write a feature schema template or print its digest")
    commands = schema.add_subparsers(dest="schema_command", required=True)
    template = commands.add_parser("template", help="write schema.toml to fill in (public values)")
    template.add_argument("directory", type=Path, help="a csv:DIR site folder")
    template.add_argument("--label-column", required=True, help="the label column (not a feature)")
    template.add_argument("--out", type=Path, help=f"output file (default DIR/{FILENAME})")
    template.add_argument(
        "--from-data",
        action="store_true",
        help="fill ranges with the data's min/max (NOT private: replace them before a run)",
    )
    template.add_argument("--force", action="store_true", help="overwrite an existing file")
    digest = commands.add_parser("digest", help="print the SHA-256 of a schema file")
    digest.add_argument("path", type=Path, help=f"a schema file or a folder holding {FILENAME}")


def run_schema_command(args: argparse.Namespace, console: Console) -> None:
    if args.schema_command == "digest":
        path = args.path / FILENAME if args.path.is_dir() else args.path
        console.print(read_schema_file(path).digest(), highlight=False)
        return
    out = args.out or args.directory / FILENAME
    if out.exists() and not args.force:
        raise DataError(f"{out}: exists; pass --force to overwrite it")
    sites = discover(args.directory)
    first = sites[0].train or sites[0].test
    names, _ = read_features(first, label_column=args.label_column)
    ranges = None
    if args.from_data:
        ranges = _data_ranges(sites, args.label_column, names)
    out.write_text(template_text(names, ranges=ranges, from_data=args.from_data))
    console.print(f"wrote {out} ({len(names)} features)", highlight=False)
    if args.from_data:
        print(FROM_DATA_WARNING.format(path=out), file=sys.stderr)


def _data_ranges(
    sites: list[SiteFiles], label_column: str, names: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for files in sites:
        for path in (files.train, files.test):
            if path is None:
                continue
            columns, x = read_features(path, label_column=label_column)
            for j, name in enumerate(columns):
                low, high = float(x[:, j].min()), float(x[:, j].max())
                old = ranges.get(name, (low, high))
                ranges[name] = (min(old[0], low), max(old[1], high))
    return {n: ranges[n] for n in names if n in ranges}
