"""Copy the eval CLI's tables into the README, so its numbers are never typed by hand.

A generated block in a Markdown file sits between two comments that name its source:

    <!-- from results/zoo_x4/table.md (y); update with: python -m eval.readme_sync -->
    ...
    <!-- end of generated table -->

``(y)`` takes the Y-channel PSNR/SSIM table with its notes, ``(lpips)`` the LPIPS table.
``python -m eval.readme_sync`` rewrites every block from the committed ``table.md`` files;
``--check`` only reports stale blocks (the test suite runs it), exiting 1 when any is.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from eval.cache import atomic_write_text
from eval.tables import LPIPS_HEADING, RGB_HEADING

ROOT = Path(__file__).resolve().parent.parent
END = "<!-- end of generated table -->"
_BLOCK = re.compile(r"(?P<start><!-- from (?P<src>\S+) \((?P<part>\w+)\);[^\n]*-->\n)(?P<body>.*?)(?P<end>\n"
                    + re.escape(END) + ")", re.DOTALL)


class SyncError(ValueError):
    pass


def section(table_md: str, part: str) -> str:
    """The part of an eval ``table.md`` a README block shows."""
    if part == "y":
        return table_md.split(RGB_HEADING, 1)[0].strip()
    if part == "lpips":
        if LPIPS_HEADING not in table_md:
            raise SyncError("no LPIPS table in it (evaluate with --lpips)")
        tail = table_md.split(LPIPS_HEADING, 1)[1]
        # the table is the first block after the heading line
        return tail.split("\n\n", 2)[1].strip()
    raise SyncError(f"unknown part {part!r} (use y or lpips)")


def sync(text: str, root: Path | None = None) -> tuple[str, list[str]]:
    """(updated text, sources of the blocks that changed); sources are relative to ``root``."""
    root = root or ROOT
    changed = []

    def fill(m: re.Match) -> str:
        src = root / m["src"]
        if not src.is_file():
            raise SyncError(f"{m['src']} does not exist; run the eval command that writes it")
        try:
            body = section(src.read_text(), m["part"])
        except SyncError as e:
            raise SyncError(f"{m['src']}: {e}") from None
        if body != m["body"]:
            changed.append(f"{m['src']} ({m['part']})")
        return m["start"] + body + m["end"]

    return _BLOCK.sub(fill, text), changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.readme_sync", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, default=[ROOT / "README.md"],
                    help="Markdown files with generated blocks (default: the README)")
    ap.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    args = ap.parse_args(argv)
    stale = False
    for path in args.files:
        try:
            text = path.read_text()
            new, changed = sync(text)
        except (OSError, SyncError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
        for c in changed:
            print(f"{path.name}: {'stale' if args.check else 'updated'} block from {c}")
        if changed and not args.check:
            atomic_write_text(path, new)
        stale |= bool(changed)
    if args.check and stale:
        print("run `python -m eval.readme_sync` to update", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
