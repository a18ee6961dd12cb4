"""The repository holds only what this project wrote.

JSON-LD contexts published by others are read from the installed pyld package or answered from
our own tables (``server/activitypub/context_tables.py``); real documents and published vectors
from other projects live outside the repository, in the reference leg (``tests/reference``).
This test fails when a data file appears in ``server/`` or ``tests/`` that is not on the list of
the project's own, or when any file there is a JSON-LD context other than ours.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Data files (anything that is not code, a template or a stylesheet) the project wrote itself.
OWN_DATA_FILES = {
    "server/activitypub/contexts/interocc-v1.json",  # our vocabulary, served at /ns/interocc/v1
    "tests/jsonld_expected.json",  # normalise() answers to our own trick cases
    "tests/reference/normalise_sha256.json",  # digests only, never the documents
    "tests/support/keys.json",  # RSA test keys generated for this suite (tests/support/keys.py)
    # Pinned installs of the interop peers and the browser tests.
    "tests/browser/package.json",
    "tests/browser/package-lock.json",
    "tests/interop/fedify-peer/package.json",
    "tests/interop/fedify-peer/package-lock.json",
    "tests/interop/bovine-peer/requirements.in",
    "tests/interop/bovine-peer/requirements.txt",
}
CODE_AND_TEXT = {".py", ".mjs", ".js", ".css", ".html", ".md"}


def _tracked_and_untracked() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "server", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [name for name in listing if (ROOT / name).is_file()]


# Text the project writes in other forms: e-mail templates, translation catalogues.
OWN_TEXT_FOLDERS = ("server/web/templates/", "server/translations/")


def test_only_the_projects_own_data_files() -> None:
    data = {
        name
        for name in _tracked_and_untracked()
        if Path(name).suffix not in CODE_AND_TEXT and not name.startswith(OWN_TEXT_FOLDERS)
    }
    assert data <= OWN_DATA_FILES, f"not the project's own: {sorted(data - OWN_DATA_FILES)}"


def test_no_copied_sources_listing() -> None:
    """A SOURCES.md marks files copied from elsewhere; none belongs in the repository."""
    copied = [name for name in _tracked_and_untracked() if Path(name).name == "SOURCES.md"]
    assert copied == []


def test_contexts_folder_holds_only_our_context() -> None:
    folder = ROOT / "server" / "activitypub" / "contexts"
    assert sorted(p.name for p in folder.iterdir()) == ["interocc-v1.json"]
    document = json.loads((folder / "interocc-v1.json").read_text(encoding="utf-8"))
    assert document["@context"]["interocc"] == "https://interocc.org/ns#"


def test_no_other_json_ld_context_anywhere() -> None:
    found = []
    for name in _tracked_and_untracked():
        if not name.endswith((".json", ".jsonld")):
            continue
        try:
            document = json.loads((ROOT / name).read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(document, dict) and "@context" in document:
            found.append(name)
    assert found == ["server/activitypub/contexts/interocc-v1.json"]
