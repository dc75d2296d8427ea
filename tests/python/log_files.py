"""Where records lie in a bus directory's newest segment, for tests that damage it by hand."""

from __future__ import annotations

from mmsb.inspect_cmd import inspect_dir

RECORD_HEADER = 24  # docs/format.md, "Record framing"


def last_record(path) -> tuple[str, int, int]:
    """(segment file, offset, end without padding) of the newest segment's last record. Closing a
    bus appends a sync mark after it, so "the end of the file" is not where the record ends."""
    newest = inspect_dir(str(path), records=True)["segments"][-1]
    rec = newest["dump"][-1]
    return newest["file"], rec["offset"], rec["offset"] + RECORD_HEADER + rec["body_bytes"]
