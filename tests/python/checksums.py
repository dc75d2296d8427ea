"""CRC32C (Castagnoli) written out in Python: the tests' independent oracle for the checksums the
engine computes (record framing, replica hashes), so a wrong polynomial or seed there shows."""

from __future__ import annotations


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data, crc: int = 0) -> int:
    """CRC32C of `data`, chainable: crc32c(b, crc32c(a)) == crc32c(a + b)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
