"""Writing benchmark figures into ``benchmarks/RESULTS.md``: each script owns one ``## `` section.

Two ways to write: replace a whole section (:func:`write_section`), or replace one marked block
``<!-- marker:start --> ... <!-- marker:end -->`` inside a section, appending the block (and the
section) when missing (:func:`write_marked_block`). Text outside the target is never touched.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else "# Benchmark results\n"


def write_section(text: str, section: str, path: Path = RESULTS) -> None:
    """Replace ``section`` (its heading line up to the next ``## ``) with ``text``, or append."""
    body = _read(path)
    if section in body:
        start = body.index(section)
        nxt = body.find("\n## ", start + len(section))
        rest = "\n\n" + body[nxt + 1 :] if nxt != -1 else "\n"
        body = body[:start] + text.rstrip() + rest
    else:
        body = body.rstrip() + "\n\n" + text
    path.write_text(body)


def emit(text: str, section: str, *, write: bool = True, path: Path = RESULTS) -> None:
    """Print a benchmark's report and, unless ``write`` is false, make it ``section``."""
    print(text)
    if write:
        write_section(text, section, path)


def write_marked_block(text: str, section: str, marker: str, path: Path = RESULTS) -> None:
    """Replace the ``marker`` block inside ``section`` with ``text`` (appended if missing)."""
    doc = _read(path)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        if section not in doc:
            doc = doc.rstrip() + f"\n\n{section}\n"
        head, tail = doc.split(section, 1)
        nxt = tail.find("\n## ")
        body, rest = (tail, "") if nxt < 0 else (tail[:nxt], tail[nxt:])
        doc = head + section + body.rstrip() + "\n\n" + block + "\n" + rest
    path.write_text(doc)


def machine() -> str:
    """One line on the machine a benchmark ran on (cores as ``nproc`` counts them, CPU, Python)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))  # what nproc prints
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return (
        f"{cores} cores (`nproc`), {cpu}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
