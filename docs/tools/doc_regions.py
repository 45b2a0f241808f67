"""Generated regions of a Markdown document, each rebuilt from records by a named fragment.

A document marks each generated region::

    <!-- lsr1bench:begin NAME -->
    ...replaced on every regeneration...
    <!-- lsr1bench:end NAME -->

and :func:`update_regions` rewrites every region with ``fragments[NAME](folder)``, the
text between regions left alone. The reproduction document (``reproduction.py``) uses it;
any other document generated from committed records can supply its own fragments.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from lsr1bench.records import atomic_write_text
from lsr1bench.reporting.runs import ReportError

BEGIN = re.compile(r"<!-- lsr1bench:begin ([A-Za-z0-9_.-]+) -->")
END_TEMPLATE = "<!-- lsr1bench:end {name} -->"

Fragments = Mapping[str, Callable[[Path], str]]


def render_regions(text: str, fragments: Fragments, folder: Path, source: str = "the doc") -> str:
    """``text`` with every marked region replaced by its fragment; raises ReportError on a
    region with no end marker, a name with no fragment, or a text with no region."""
    out: list[str] = []
    position = 0
    found = False
    for match in BEGIN.finditer(text):
        if match.start() < position:
            continue  # a begin marker inside a region already replaced
        name = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        if name not in fragments:
            known = ", ".join(sorted(fragments))
            raise ReportError(f"{source}:{line}: unknown fragment {name!r} (known: {known})")
        end_marker = END_TEMPLATE.format(name=name)
        end = text.find(end_marker, match.end())
        if end < 0:
            raise ReportError(f"{source}:{line}: {match.group(0)} has no {end_marker} after it")
        out.append(text[position : match.end()])
        out.append("\n" + fragments[name](folder).rstrip("\n") + "\n")
        position = end
        found = True
    if not found:
        raise ReportError(f"{source}: no <!-- lsr1bench:begin NAME --> marker")
    out.append(text[position:])
    return "".join(out)


def update_regions(doc: Path, fragments: Fragments, folder: Path) -> bool:
    """Rewrite ``doc``'s generated regions from the records in ``folder``, atomically (a
    failing fragment leaves the file as it was); returns whether anything changed."""
    try:
        text = doc.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{doc}: no such file") from None
    new = render_regions(text, fragments, folder, str(doc))
    if new == text:
        return False
    atomic_write_text(doc, new)
    return True


def main(argv: list[str], script: str, default_doc: Path, update: Callable[[Path, Path | None], bool]) -> int:
    """The command line of a document's tool: ``python SCRIPT [DOC.md [RECORDS_FOLDER]]``
    regenerates the document through ``update(doc, folder)``; exit 2 on a bad record."""
    if len(argv) > 2 or any(a.startswith("-") for a in argv):
        print(f"usage: python {script} [DOC.md [RECORDS_FOLDER]]", file=sys.stderr)
        return 2
    doc = Path(argv[0]) if argv else default_doc
    try:
        changed = update(doc, Path(argv[1]) if len(argv) == 2 else None)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{doc}: {'updated' if changed else 'already up to date'}")
    return 0
