"""Stops the reference leg with one line when its documents are not there."""

from __future__ import annotations

import pytest

from tests.reference import SETTING, reference_dir

if not (reference_dir() / "remote").is_dir():
    pytest.exit(
        f"reference documents not found at {reference_dir()}: set {SETTING} to the folder "
        "that holds remote/ and proofs/",
        returncode=4,
    )
