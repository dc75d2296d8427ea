"""Files a command writes at its end (`mmsb validate --json`, `mmsb bench --json`): checked
before the long work, so that a path that cannot be written fails at once, not after minutes of
validation or benchmarks; and not left behind empty when the work never finished."""

from __future__ import annotations

import os
from typing import Optional


class PendingOutput:
    """A file written at the end of a command. check() makes its folder and opens it for
    appending, which creates it when absent (an existing file keeps its content until written);
    discard() removes it again when check() created it and nothing was written since."""

    def __init__(self, path: str, make_folder: bool = False) -> None:
        self.path = path
        self.make_folder = make_folder
        self.created = False

    def check(self) -> Optional[str]:
        """None when the file can be written, else why not (the OS's reason). With
        `make_folder`, a missing folder is made first."""
        try:
            if self.make_folder:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.created = not os.path.exists(self.path)
            open(self.path, "a").close()
        except OSError as e:
            self.created = False
            return str(e.strerror or e)
        return None

    def discard(self) -> None:
        if self.created:
            try:
                if os.path.getsize(self.path) == 0:
                    os.remove(self.path)
            except OSError:
                pass
            self.created = False

    def written(self) -> None:
        """The command wrote the file: discard() leaves it."""
        self.created = False
