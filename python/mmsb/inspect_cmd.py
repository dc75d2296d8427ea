"""`mmsb inspect PATH [--records]`: what a bus directory holds, without opening it for writing."""

from __future__ import annotations

import json
from typing import Any, TextIO

from . import _core


def inspect_dir(path: str, records: bool = False) -> dict[str, Any]:
    """Checkpoints (lsn, pages, bytes), segments (first/last lsn, records, bytes, torn tail or
    error) and, with records=True, every record (offset, lsns, size, ops). A segment damaged
    inside keeps its good records before the damage, with the damage under "error". Takes no
    lock."""
    return _core._inspect(str(path), records)


def print_inspection(info: dict[str, Any], out: TextIO, as_json: bool = False) -> int:
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
    else:
        # Paths and file names quoted as the record names are (repr), so that a newline in one
        # cannot break or forge a line of the summary.
        out.write(f"bus directory {info['path']!r}\n")
        for cp in info["checkpoints"]:
            if "error" in cp:
                out.write(f"  checkpoint {cp['file']!r}: DAMAGED: {cp['error']}\n")
            else:
                out.write(f"  checkpoint lsn {cp['lsn']:>12,}  {cp['pages']:>8,} pages  {cp['bytes']:>14,} B\n")
        last, damaged_log = 0, False
        for seg in info["segments"]:
            if "gap_after" in seg and not damaged_log:  # lsns missing before this segment
                last, damaged_log = seg["gap_after"], True
            if "first_lsn" in seg:
                tail = f"  torn tail: {seg['torn_tail']}" if seg["torn_tail"] else ""
                span = (f"lsn {seg['first_lsn']:>12,} .. {seg['last_lsn']:<12,}" if seg["records"]
                        else f"from lsn {seg['first_lsn']:<21,}")  # no record: no last lsn to show
                out.write(f"  segment {span} {seg['records']:>8,} records  {seg['bytes']:>14,} B{tail}\n")
                if not damaged_log:
                    last = max(last, seg["last_lsn"])
                for rec in seg.get("dump", []):
                    lsns = str(rec["first_lsn"]) if rec["lsn_count"] == 1 else \
                        f"{rec['first_lsn']}..{rec['first_lsn'] + rec['lsn_count'] - 1}"
                    out.write(f"    @{rec['offset']:<10} lsn {lsns:<16} {rec['body_bytes']:>10} B  "
                              f"{'; '.join(rec['ops'])}\n")
            if "error" in seg:
                out.write(f"  segment {seg['file']!r}: CORRUPT: {seg['error']}\n")
                damaged_log = True
        if info["other_files"]:
            out.write(f"  other files: {', '.join(map(repr, sorted(info['other_files'])))}\n")
        if damaged_log:
            out.write(f"the log is damaged after lsn {last:,} (see CORRUPT above)\n")
        else:
            out.write(f"last lsn in the log: {last:,}\n")
    damaged = any("error" in x for x in info["checkpoints"] + info["segments"])
    return 1 if damaged else 0
