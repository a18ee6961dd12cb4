"""The reference leg (``make test-reference``): InterOcc against other projects' own documents.

Real documents published by other fediverse servers, and published test vectors, are not part
of this repository. They live in a folder beside it, named by ``INTEROCC_REFERENCE_DIR``
(default ``../shared/reference`` from the repository root), with each file's source listed in
the ``SOURCES.md`` of its folder. ``make test`` never reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent.parent
SETTING = "INTEROCC_REFERENCE_DIR"


def reference_dir() -> Path:
    """The folder of reference documents, as the setting names it (relative to the repository)."""
    configured = os.environ.get(SETTING) or "../shared/reference"
    return (REPOSITORY / configured).resolve()
