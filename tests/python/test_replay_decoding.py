"""Replay decodes a transaction record one op at a time (docs/format.md; all at once took about
ten times the record's bytes), yet every record it reads is checked whole, as before: crafted
records with valid checksums whose ops do not decode are corruption naming the op, for mmsb.open
and for views of the past that reach the record, and a view that stops before a record does not
read it."""

from __future__ import annotations

import os
import shutil
import struct

import pytest

import mmsb
from checksums import crc32c

SEGMENT = "seg-00000000000000000001.log"
DELTA, TRANSACTION, PACKED_BATCH = 4, 6, 10


def frame(rtype, first_lsn, lsn_count, body):
    head = struct.pack("<IIBBHIQ", len(body), 0, rtype, 0, 0, lsn_count, first_lsn)
    crc = crc32c(head[8:] + body, crc32c(head[:4]))
    record = head[:4] + struct.pack("<I", crc) + head[8:] + body
    return record + bytes(-len(record) % 8)


def delta(page, offset, data):
    return struct.pack("<QQB7xQ", page, 0, 0, 1) + struct.pack("<QQ", offset, len(data)) + data


def transaction(ops):
    out = struct.pack("<II", len(ops), 0)
    for rtype, body in ops:
        out += struct.pack("<BBHI", rtype, 0, 0, len(body)) + body
        out += bytes(-len(out) % 8)
    return out


UNDECODABLE = struct.pack("<QQB7xQ", 1, 0, 0, 1 << 60)  # a delta claiming 2^60 runs
BAD_BATCH = struct.pack("<QQB7x", 0, 1, 0x80) + struct.pack("<QQQ", 1, 0, 1) + b"x" + bytes(7)  # flag bit 7


def crafted(tmp_path, records):
    """A bus directory (page 1 of 64 bytes, lsns 1-2) with records(next_lsn) appended."""
    path = tmp_path / "bus"
    shutil.rmtree(path, ignore_errors=True)
    with mmsb.Bus(path) as bus:
        bus.create_page(64).write(0, b"a")
    with open(os.path.join(path, SEGMENT), "ab") as f:
        f.write(records(3))
    return path


def refused(open_it, *named):
    with pytest.raises(mmsb.LogCorruptError) as e:
        open_it()
    for text in named:
        assert text in str(e.value)
    assert "cannot be replayed" not in str(e.value)  # a decoding error, named once


def test_an_op_that_does_not_decode_late_in_a_transaction_fails_every_reader_reaching_it(tmp_path):
    ops = [(DELTA, delta(1, 0, b"x")), (DELTA, delta(1, 1, b"y")), (DELTA, UNDECODABLE)]
    path = crafted(tmp_path, lambda n: frame(TRANSACTION, n, 3, transaction(ops)))  # lsns 3-5
    for open_it in (lambda: mmsb.open(path), lambda: mmsb.replay(path), lambda: mmsb.replay(path, to=3),
                    lambda: mmsb.replay(path, to=4)):
        refused(open_it, "(transaction op 2)")
    with mmsb.replay(path, to=2) as past:  # stops before the record
        assert past.lsn == 2


def test_a_record_past_the_stop_is_not_read_and_one_reached_is(tmp_path):
    path = crafted(tmp_path, lambda n: frame(DELTA, n, 1, UNDECODABLE))  # lsn 3
    with mmsb.replay(path, to=2) as past:
        assert past.lsn == 2
    refused(lambda: mmsb.replay(path, to=3), "record at byte")
    refused(lambda: mmsb.open(path), "record at byte")


def test_a_bad_batch_header_in_a_transaction_names_its_op(tmp_path):
    ops = [(DELTA, delta(1, 0, b"x")), (PACKED_BATCH, BAD_BATCH)]
    path = crafted(tmp_path, lambda n: frame(TRANSACTION, n, 2, transaction(ops)))
    refused(lambda: mmsb.open(path), "(transaction op 1)", "batch flags")
