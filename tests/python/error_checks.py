"""The check every error-path test makes: the exact exception class, a message, and nothing
changed (DESIGN §2: "A failed call leaves the bus exactly as before")."""

from __future__ import annotations

import pytest

import mmsb
from reference_model import capture_state


def fails(bus, exc, fn, base=None, *, contains=()):
    """Calls fn, which must raise exactly `exc`; checks the base classes, that the message names
    each of `contains`, and that the bus state (every page's bytes and epoch, the names, the lsn)
    is unchanged. Returns the exception."""
    before = capture_state(bus)
    with pytest.raises(exc) as info:
        fn()
    err = info.value
    assert type(err) is exc, f"expected exactly {exc.__name__}, got {type(err).__name__}: {err}"
    assert isinstance(err, mmsb.MmsbError)
    if base is not None:
        assert isinstance(err, base)
    msg = str(err)
    assert msg and not msg.startswith(("'", '"')), msg
    for part in contains:
        assert str(part) in msg, (part, msg)
    assert capture_state(bus) == before
    return err
