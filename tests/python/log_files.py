"""Bus directory files for tests: where records lie in the newest segment (for tests that damage
it by hand), and a digest of every file (for tests that compare directories)."""

from __future__ import annotations

import hashlib
import os

from mmsb.inspect_cmd import inspect_dir

RECORD_HEADER = 24  # docs/format.md, "Record framing"


def last_record(path) -> tuple[str, int, int]:
    """(segment file, offset, end without padding) of the newest segment's last record. Closing a
    bus appends a sync mark after it, so "the end of the file" is not where the record ends."""
    newest = inspect_dir(str(path), records=True)["segments"][-1]
    rec = newest["dump"][-1]
    return newest["file"], rec["offset"], rec["offset"] + RECORD_HEADER + rec["body_bytes"]


def files_of(path):
    """{name: (size, sha256)} of every file in a bus directory."""
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        out[name] = (len(data), hashlib.sha256(data).hexdigest())
    return out
