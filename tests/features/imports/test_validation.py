"""Upload validation (SPEC IMP-1): malicious or wrong uploads are refused before anything is
imported, each with a clear reason."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from conveyor.errors import UploadRejected
from conveyor.features.imports import UploadLimits, extract, validate_upload


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def good_export(path: Path) -> Path:
    project = json.dumps({"name": "demo"}).encode()
    issues = b"\n".join(json.dumps({"iid": i, "title": f"t{i}"}).encode() for i in range(3))
    return tar_gz(path, [file_entry("project.json", project), file_entry("issues.jsonl", issues)])


def test_a_good_export_passes_and_extracts(tmp_path: Path) -> None:
    upload = validate_upload(good_export(tmp_path / "export.tar.gz"))
    assert upload.kind == "tar.gz"
    assert [e.name for e in upload.entries] == ["project.json", "issues.jsonl"]
    root = extract(upload, tmp_path / "out")
    assert json.loads((root / "project.json").read_text()) == {"name": "demo"}


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([file_entry("../evil.sh", b"x")], "climbs out of the archive with '..'"),
        ([file_entry("a/../../evil", b"x")], "climbs out"),
        ([file_entry("/etc/cron.d/evil", b"x")], "absolute path"),
        ([special("passwd", tarfile.SYMTYPE, "/etc/passwd")], "is a symbolic link to '/etc"),
        ([special("a/link", tarfile.SYMTYPE, "../../outside")], "is a symbolic link"),
        ([special("hard", tarfile.LNKTYPE, "../x")], "is a hard link to '../x'"),
        ([special("tty", tarfile.CHRTYPE)], "is a character device"),
        ([special("pipe", tarfile.FIFOTYPE)], "is a FIFO"),
    ],
)
def test_unsafe_tar_entries_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], fragment: str
) -> None:
    path = tar_gz(tmp_path / "bad.tar.gz", [file_entry("ok.json", b"{}"), *members])
    with pytest.raises(UploadRejected, match=fragment) as info:
        validate_upload(path)
    assert info.value.entry == members[0][0].name


def test_even_links_inside_the_archive_are_refused(tmp_path: Path) -> None:
    # An export holds files and directories only: a harmless-looking link is the first step of
    # every chain (a/b/up -> .., a/b/esc -> up/../..), so none is let in.
    path = tar_gz(
        tmp_path / "links.tar.gz",
        [file_entry("data/a.json", b"{}"), special("data/b.json", tarfile.SYMTYPE, "a.json")],
    )
    with pytest.raises(
        UploadRejected, match=re.escape("'data/b.json' is a symbolic link to 'a.json'")
    ):
        validate_upload(path)


def test_a_decompression_bomb_is_stopped_while_it_inflates(tmp_path: Path) -> None:
    # 64 MB of zeros compress to ~64 KB: ratio ~1000x.
    path = tmp_path / "bomb.tar.gz"
    zeros = b"\0" * (64 * 1024 * 1024)
    tar_gz(path, [file_entry("zeros.bin", zeros)])
    with pytest.raises(UploadRejected, match="decompression bomb"):
        validate_upload(path)
    # The ratio cap stops it while the stream inflates, a few MB in.
    with pytest.raises(UploadRejected, match=r"inflates past .* over the expansion ratio"):
        validate_upload(path)
    # Without a ratio cap, the declared size is refused before its data is inflated.
    with pytest.raises(UploadRejected, match="holds over 1,048,576 bytes uncompressed"):
        validate_upload(path, UploadLimits(max_total_bytes=1024 * 1024, max_ratio=10**9))


def test_a_gzip_that_lies_is_caught_by_the_stream_cap(tmp_path: Path) -> None:
    path = tmp_path / "lying.tar.gz"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(200):
            info, data = file_entry(f"f{i}.bin", b"\0" * 100_000)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(inner.getvalue()))
    limits = UploadLimits(max_total_bytes=5_000_000, max_ratio=10**9)
    with pytest.raises(UploadRejected, match=r"inflates past|uncompressed"):
        validate_upload(path, limits)


def test_oversized_uploads_and_too_many_entries(tmp_path: Path) -> None:
    path = good_export(tmp_path / "export.tar.gz")
    with pytest.raises(UploadRejected, match="over the limit of 10"):
        validate_upload(path, UploadLimits(max_upload_bytes=10))
    with pytest.raises(UploadRejected, match=r"over 1 entries .* reached at 'issues\.jsonl'"):
        validate_upload(path, UploadLimits(max_entries=1))
    with pytest.raises(UploadRejected, match=re.escape("entry 'issues.jsonl' is")):
        validate_upload(path, UploadLimits(max_entry_bytes=30))


def test_the_type_comes_from_the_content(tmp_path: Path) -> None:
    fake = tmp_path / "export.tar.gz"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 600)
    with pytest.raises(UploadRejected, match="not an archive"):
        validate_upload(fake)
    renamed = good_export(tmp_path / "export.png")
    assert validate_upload(renamed).kind == "tar.gz"
    with pytest.raises(UploadRejected, match=re.escape("a tar.gz archive; accepted: zip")):
        validate_upload(renamed, UploadLimits(allowed=("zip",)))


def test_zip_archives_are_checked_too(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("project.json", "{}")
    assert validate_upload(good).kind == "zip"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../../evil", "x")
    with pytest.raises(UploadRejected, match="climbs out"):
        validate_upload(bad)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("ln")
        info.external_attr = (0o120777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UploadRejected, match="symbolic link"):
        validate_upload(link)
    device = tmp_path / "device.zip"
    with zipfile.ZipFile(device, "w") as z:
        info = zipfile.ZipInfo("dev")
        info.external_attr = (0o020666) << 16  # a character device
        z.writestr(info, "")
    with pytest.raises(UploadRejected, match="'dev' is a character device"):
        validate_upload(device)


def test_a_damaged_archive_is_refused(tmp_path: Path) -> None:
    path = good_export(tmp_path / "export.tar.gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UploadRejected, match="damaged"):
        validate_upload(path)
