"""Hostile archives: refused whole, and nothing written.

An archive file is untrusted input to the instance importing it: it may be damaged, tampered
with, truncated, huge, of another version, opened with the wrong passphrase, or made with the
right passphrase by someone who means harm (ZIP members named like paths, a communiqué that
is no communiqué, a file that is no image). Each is refused with one clear line; the database
is exactly as it was and no file is left in the media folder.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
import unicodedata
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server import archive, cli
from server.context import create_context
from tests.conftest import SECRET
from tests.test_archive import A_URL, B_URL, PASSPHRASE, instance_settings, populate
from tests.test_cli import snapshot

CHEAP = archive.ScryptParams(log2_n=14, r=8, p=1)  # the format's floor: fast tests
NOW = datetime(2026, 1, 1, tzinfo=UTC)

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Files:
    """The members of a real export of an assembly with one of everything (from a copy of
    the SQLite template): what the hostile archives below are made from."""
    root = tmp_path_factory.mktemp("archive-source")
    shutil.copy(sqlite_template, root / "a.sqlite3")
    settings = instance_settings(f"sqlite+aiosqlite:///{root / 'a.sqlite3'}", A_URL, root / "m")

    async def export() -> bytes:
        ctx = await create_context(settings)
        try:
            await populate(ctx)
            async with ctx.sessions() as session, session.begin():
                done = await archive.export_assembly(
                    session, settings, ctx.urls, handle="libertyplaza", now=ctx.clock()
                )
            return done.zip_data
        finally:
            await ctx.aclose()

    return archive.unpack(asyncio.run(export()))


def seal(files: Files, passphrase: str = PASSPHRASE) -> bytes:
    return archive.encrypt(archive.pack(files, now=NOW), passphrase, params=CHEAP)


def raw_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A ZIP whose member names are exactly as given (zipfile writes "../x" and "/x" as is)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def edited(files: Files, name: str, change: Callable[[Any], None]) -> Files:
    doc = json.loads(files[name])
    change(doc)
    return files | {name: json.dumps(doc).encode()}


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- the encrypted file, without a database ------------------------------------------------


@pytest.fixture(scope="module")
def sealed(plain: Files) -> bytes:
    return seal(plain)


def test_the_right_passphrase_opens_it_typed_composed_or_decomposed(plain: Files) -> None:
    passphrase = "Señora Presidenta de la Asamblea"
    data = seal(plain, unicodedata.normalize("NFD", passphrase))
    opened = archive.open_archive(data, unicodedata.normalize("NFC", passphrase))
    assert opened.handle == "libertyplaza" and len(opened.communiques) == 4


def test_a_wrong_passphrase_is_refused(sealed: bytes) -> None:
    for wrong in ("", PASSPHRASE.upper(), PASSPHRASE + " ", PASSPHRASE[:-1]):
        with pytest.raises(archive.ArchiveError, match="^wrong passphrase or damaged archive$"):
            archive.decrypt(sealed, wrong)


def test_every_byte_of_the_header_is_authenticated(sealed: bytes) -> None:
    # magic, versions, scrypt parameters, salt and nonce: each byte changed is refused.
    for at in range(archive.HEADER.size):
        with pytest.raises(archive.ArchiveError) as refused:
            archive.decrypt(flipped(sealed, at), PASSPHRASE)
        assert "damaged" in refused.value.message, at


def test_any_byte_of_the_ciphertext_or_tag_changed_is_refused(sealed: bytes) -> None:
    body = range(archive.HEADER.size, len(sealed))
    positions = [*body[:64], *body[len(body) // 2 : len(body) // 2 + 64], *body[-64:]]
    for at in positions:  # the start, the middle, the end and every byte of the tag
        with pytest.raises(archive.ArchiveError, match="^wrong passphrase or damaged archive$"):
            archive.decrypt(flipped(sealed, at), PASSPHRASE)


def test_a_truncated_archive_is_refused(sealed: bytes) -> None:
    for length in (0, 8, archive.HEADER.size, archive.HEADER.size + 15, len(sealed) - 1, 1000):
        with pytest.raises(archive.ArchiveError, match="damaged"):
            archive.decrypt(sealed[:length], PASSPHRASE)
    with pytest.raises(archive.ArchiveError, match="damaged"):
        archive.decrypt(sealed + b"\0", PASSPHRASE)  # or lengthened


@pytest.mark.parametrize(
    ("log2_n", "r", "p"), [(30, 8, 1), (13, 8, 1), (20, 8, 1), (17, 4096, 1), (17, 8, 64)]
)
def test_key_derivation_parameters_out_of_range_are_refused_before_any_work(
    sealed: bytes, log2_n: int, r: int, p: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tampered header must not make the importer spend gigabytes or minutes.
    fields = list(archive.HEADER.unpack_from(sealed))
    fields[3:6] = [log2_n, r, p]
    header = archive.HEADER.pack(*fields)

    def derive(*args: object) -> bytes:
        raise AssertionError("derived a key from parameters out of range")

    monkeypatch.setattr(archive, "_derive", derive)
    with pytest.raises(archive.ArchiveError, match="out of range"):
        archive.decrypt(header + sealed[archive.HEADER.size :], PASSPHRASE)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/x",
        "/etc/x",
        "media/../key.json",
        "media/../../x.jpg",
        "..\\..\\x.json",
        "C:/x.json",
        "media/",
        "media/short.jpg",
        "media/AAAAAAAAAAAAAAAAAAAA.exe",
        "notes.txt",
    ],
)
def test_a_member_that_is_not_one_of_the_archive_s_own_is_refused(plain: Files, name: str) -> None:
    data = raw_zip([*plain.items(), (name, b"x")])
    assert name in zipfile.ZipFile(io.BytesIO(data)).namelist()
    with pytest.raises(archive.ArchiveError, match="unexpected file"):
        archive.unpack(data)


def test_a_member_appearing_twice_or_too_large_is_refused(
    plain: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile writes it anyway
        twice = raw_zip([*plain.items(), ("key.json", b"{}")])
    with pytest.raises(archive.ArchiveError, match="appears twice"):
        archive.unpack(twice)
    monkeypatch.setattr(archive, "MAX_JSON_BYTES", 100)
    # Read with a bound, whatever size the ZIP declares.
    with pytest.raises(archive.ArchiveError, match="too large"):
        archive.unpack(archive.pack(plain, now=NOW))


# -- through the command, into a database: refused, and nothing written ---------------------


def _sealed_file(files: Files) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "hostile.interocc"
        path.write_bytes(seal(files))
        return path

    return make


def _bytes_file(change: Callable[[bytes], bytes], files: Files) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "hostile.interocc"
        path.write_bytes(change(seal(files)))
        return path

    return make


def _oversized(tmp_path: Path) -> Path:
    path = tmp_path / "huge.interocc"
    with path.open("wb") as f:
        f.truncate(archive.MAX_ARCHIVE_BYTES + 1)  # sparse: nothing is really written
    return path


def _last_communique_language(doc: Any) -> None:
    doc["items"][-1]["language"] = "not a language"


def _photo_is_no_photo(files: Files) -> Files:
    [name] = [n for n in files if n.endswith(".jpg")]
    return files | {name: b"\xff\xd8 not a photo"}


def _version(doc: Any) -> None:
    doc["version"] = 2


CASES: list[tuple[str, Callable[[Files], Callable[[Path], Path]], str, str]] = [
    # Refused half-way through: the icon and the photo were already stored, then rolled back.
    (
        "a bad communique after the others",
        lambda f: _sealed_file(edited(f, "communiques.json", _last_communique_language)),
        PASSPHRASE,
        "damaged archive: communiqué 4: invalid language code",
    ),
    (
        "path traversal, right passphrase",
        lambda f: _bytes_file(
            lambda _d: archive.encrypt(
                raw_zip([*f.items(), ("../../etc/x", b"owned")]), PASSPHRASE, params=CHEAP
            ),
            f,
        ),
        PASSPHRASE,
        "unexpected file '../../etc/x'",
    ),
    (
        "absolute path, right passphrase",
        lambda f: _bytes_file(
            lambda _d: archive.encrypt(
                raw_zip([*f.items(), ("/etc/x", b"owned")]), PASSPHRASE, params=CHEAP
            ),
            f,
        ),
        PASSPHRASE,
        "unexpected file '/etc/x'",
    ),
    ("wrong passphrase", _sealed_file, "the ninety-nine percent", archive.WRONG_PASSPHRASE),
    (
        "a header byte changed",
        lambda f: _bytes_file(lambda d: flipped(d, archive.HEADER.size - 1), f),
        PASSPHRASE,
        archive.WRONG_PASSPHRASE,
    ),
    (
        "a ciphertext byte changed",
        lambda f: _bytes_file(lambda d: flipped(d, archive.HEADER.size + 100), f),
        PASSPHRASE,
        archive.WRONG_PASSPHRASE,
    ),
    (
        "a tag byte changed",
        lambda f: _bytes_file(lambda d: flipped(d, len(d) - 1), f),
        PASSPHRASE,
        archive.WRONG_PASSPHRASE,
    ),
    (
        "truncated",
        lambda f: _bytes_file(lambda d: d[: len(d) // 2], f),
        PASSPHRASE,
        archive.WRONG_PASSPHRASE,
    ),
    ("oversized", lambda f: _oversized, PASSPHRASE, "larger than 512 MiB"),
    (
        "an unknown format version",
        lambda f: _sealed_file(edited(f, "manifest.json", _version)),
        PASSPHRASE,
        "format version is 2: this instance reads version 1",
    ),
    (
        "a file that is no image",
        lambda f: _sealed_file(_photo_is_no_photo(f)),
        PASSPHRASE,
        "“a.jpg” is not a JPEG, PNG, GIF, WebP image or a PDF",
    ),
    (
        "a key pair that is not one",
        lambda f: _sealed_file(
            edited(f, "key.json", lambda d: d.update(public_key_pem=d["public_key_pem"][::-1]))
        ),
        PASSPHRASE,
        "key.json's public key is not its private key's",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "passphrase", "says"), CASES, ids=[c[0].replace(" ", "-") for c in CASES]
)
def test_a_refused_archive_changes_nothing(
    case: str,
    make: Callable[[Files], Callable[[Path], Path]],
    passphrase: str,
    says: str,
    plain: Files,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    media_dir = tmp_path / "b-media"
    for name, value in {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": B_URL,
        "INTEROCC_MEDIA_DIR": str(media_dir),
    }.items():
        monkeypatch.setenv(name, value)
    path = make(plain)(tmp_path)
    before = snapshot(database_url)
    monkeypatch.setattr(sys, "stdin", io.StringIO(passphrase + "\n"))

    argv = ["assembly", "import", str(path), "--handle", "plaza_libre", "--passphrase-stdin"]
    assert cli.main(argv) == cli.EXIT_ERROR, case
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("interocc: ") and err.count("\n") == 1, err
    assert says in err
    assert snapshot(database_url) == before
    assert not media_dir.exists() or list(media_dir.iterdir()) == []
