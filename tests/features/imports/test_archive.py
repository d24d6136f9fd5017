"""The hostile-archive corpus (issue #15, SPEC IMP-1): every archive below is built here with the
real ``tarfile``/``zipfile`` writers (or the ``tar`` CLI, for what ``tarfile`` cannot write) and
must be refused by :func:`validate_upload` before an import is created, refused again by
:func:`extract` on its own, and leave everything outside the import directory untouched."""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import PYTHON, python_env

from conveyor import App, Settings
from conveyor.errors import UploadRejected
from conveyor.features.imports import Imports, ValidatedUpload, extract, validate_upload
from conveyor.features.imports.project import ProjectImporter, start_project_import
from conveyor.features.imports.validation import detect_kind

SENTINEL = b"operator data: must survive every archive\n"
Members = list[tuple[tarfile.TarInfo, bytes | None]]


@dataclass(frozen=True)
class Site:
    """The places of one attack: the upload, the import directory, and what lies outside."""

    tmp: Path
    upload: Path
    work: Path
    outside: Path

    @property
    def sentinel(self) -> Path:
        return self.outside / "sentinel"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    made = Site(tmp_path, tmp_path / "upload", tmp_path / "work", tmp_path / "outside")
    for directory in (made.upload, made.work, made.outside):
        directory.mkdir()
    made.sentinel.write_bytes(SENTINEL)
    return made


def snapshot(site: Site) -> dict[str, bytes | str]:
    """Every path under tmp except the import directory, with file contents and link targets."""
    found: dict[str, bytes | str] = {}
    for base, dirs, files in os.walk(site.tmp):
        if Path(base) == site.tmp:
            dirs.remove("work")
        for name in dirs + files:
            path = Path(base) / name
            rel = str(path.relative_to(site.tmp))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                found[rel] = path.read_bytes()
            else:
                found[rel] = "dir"
    return found


# -- builders ------------------------------------------------------------------------------------
def entry(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def pax_named(name: str) -> tuple[tarfile.TarInfo, bytes]:
    """A member whose pax ``path`` record holds ``name`` as is (a ustar name field would end
    at a NUL)."""
    info, data = entry("placeholder")
    info.pax_headers = {"path": name}
    return info, data


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    return special(name, tarfile.DIRTYPE)


def tar(site: Site, members: Members, *, gz: bool = True, fmt: int = tarfile.PAX_FORMAT) -> Path:
    path = site.upload / ("export.tar.gz" if gz else "export.tar")
    with tarfile.open(path, "w:gz" if gz else "w", format=fmt) as archive:
        for info, data in [entry("project.json", b"{}"), *members]:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def zip_of(site: Site, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    path = site.upload / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": writing one is the point
        archive.writestr("project.json", "{}")
        for info, data in members:
            archive.writestr(info, data)
    return path


def zip_typed(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode in the high 16 bits counts
    info.external_attr = mode << 16
    return info


def cve_2025_4517(site: Site) -> Path:
    """The long-symlink-chain construction of CVE-2025-4517: directories with 247-character names
    reached through one-letter links, until the path passes PATH_MAX and ``os.path.realpath``
    stops resolving; a last link climbs back through the chain and out of the destination."""
    component = "d" * 247
    steps = "abcdefghijklmnop"
    members: Members = []
    path = ""
    for step in steps:
        members.append(directory(os.path.join(path, component)))
        members.append(special(os.path.join(path, step), tarfile.SYMTYPE, component))
        path = os.path.join(path, component)
    long_link = os.path.join(*steps, "l" * 254)
    members.append(special(long_link, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    members.append(special("escape", tarfile.SYMTYPE, long_link + "/../../outside"))
    members.append(entry("escape/pwned", b"written outside"))
    return tar(site, members)


def huge_declared_size(site: Site) -> Path:
    """A header claiming 100 GB followed by a few bytes (tarfile would not write the lie)."""
    info = tarfile.TarInfo("issues.jsonl")
    info.size = 100 * 1024**3
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + b"{}\n" * 100
    path = site.upload / "export.tar.gz"
    path.write_bytes(gzip.compress(raw))
    return path


def many_entries(site: Site, count: int = 200_000) -> Path:
    path = site.upload / "many.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for i in range(count):
            archive.addfile(tarfile.TarInfo(f"e{i}"), io.BytesIO(b""))
    return path


def zip_overlapping(site: Site) -> Path:
    """Two central-directory records pointing at one compressed block (the overlapping-file zip
    bomb): the second record is a copy of the first under another name."""
    path = zip_of(site, [("zeros.bin", os.urandom(100_000))])
    data = path.read_bytes()
    eocd = data.rindex(b"PK\x05\x06")
    size, start = struct.unpack_from("<II", data, eocd + 12)
    records = data[start : start + size]
    last = records.rindex(b"PK\x01\x02")
    copy = bytearray(records[last:])
    copy[46 : 46 + len("zeros.bin")] = b"zeroz.bin"
    end = bytearray(data[eocd:])
    count = struct.unpack_from("<H", end, 10)[0] + 1
    struct.pack_into("<HHI", end, 8, count, count, size + len(copy))
    path.write_bytes(data[:start] + records + bytes(copy) + bytes(end))
    return path


def tar_cli(site: Site, prepare: Callable[[Path], list[str]]) -> Path:
    """An archive made by GNU tar from a real directory tree."""
    source = site.tmp / "src"
    source.mkdir()
    (source / "project.json").write_text("{}")
    options = prepare(source)
    path = site.upload / "export.tar.gz"
    subprocess.run(["tar", *options, "-czf", str(path), "-C", str(source), "."], check=True)
    return path


def cli_symlink_chain(source: Path) -> list[str]:
    (source / "a" / "b").mkdir(parents=True)
    os.symlink("..", source / "a" / "b" / "up")
    os.symlink("up/../../..", source / "a" / "b" / "esc")
    return []


def cli_fifo(source: Path) -> list[str]:
    os.mkfifo(source / "pipe")
    return []


def cli_hardlink(source: Path) -> list[str]:
    (source / "one").write_text("x")
    os.link(source / "one", source / "two")
    return []


def cli_sparse(fmt: str) -> Callable[[Path], list[str]]:
    def prepare(source: Path) -> list[str]:
        with (source / "sparse.bin").open("wb") as f:
            f.truncate(64 * 1024 * 1024)
            f.write(b"data at the start")
        return ["--sparse", f"--format={fmt}"]

    return prepare


# -- the corpus ----------------------------------------------------------------------------------
Build = Callable[[Site], Path]
CORPUS: dict[str, tuple[Build, str]] = {
    "absolute-path": (lambda s: tar(s, [entry(str(s.outside / "pwned"))]), "absolute path"),
    "dotdot": (lambda s: tar(s, [entry("../../outside/pwned")]), "climbs out"),
    "dotdot-nested": (lambda s: tar(s, [entry("a/b/../../../../outside/pwned")]), "climbs out"),
    "symlink-outside": (
        lambda s: tar(s, [special("ln", tarfile.SYMTYPE, "../../outside"), entry("ln/pwned")]),
        "'ln' is a symbolic link",
    ),
    "symlink-absolute": (
        lambda s: tar(s, [special("ln", tarfile.SYMTYPE, str(s.outside)), entry("ln/pwned")]),
        "symbolic link",
    ),
    "symlink-chain": (
        lambda s: tar(
            s,
            [
                directory("a/b"),
                special("a/b/up", tarfile.SYMTYPE, ".."),
                special("a/b/esc", tarfile.SYMTYPE, "up/../../.."),
                entry("a/b/esc/outside/pwned"),
            ],
        ),
        "'a/b/up' is a symbolic link",
    ),
    "cve-2025-4517-long-chain": (cve_2025_4517, "is a symbolic link to 'd"),
    "hardlink-outside": (
        lambda s: tar(
            s,
            [
                special("hl", tarfile.LNKTYPE, str(s.sentinel)),
                entry("hl", b"overwritten through a hard link"),
            ],
        ),
        "'hl' is a hard link",
    ),
    "hardlink-relative": (
        lambda s: tar(s, [special("hl", tarfile.LNKTYPE, "../../outside/sentinel")]),
        "hard link",
    ),
    "hardlink-to-symlink": (
        lambda s: tar(
            s,
            [
                special("s", tarfile.SYMTYPE, "../../outside/sentinel"),
                special("h", tarfile.LNKTYPE, "s"),
                entry("h", b"overwritten"),
            ],
        ),
        "symbolic link",
    ),
    "char-device": (lambda s: tar(s, [special("null", tarfile.CHRTYPE)]), "a character device"),
    "block-device": (lambda s: tar(s, [special("disk", tarfile.BLKTYPE)]), "a block device"),
    "fifo": (lambda s: tar(s, [special("pipe", tarfile.FIFOTYPE)]), "a FIFO"),
    "dir-replaced-by-link": (
        lambda s: tar(
            s,
            [
                directory("d"),
                special("d", tarfile.SYMTYPE, "../../outside"),
                entry("d/pwned"),
            ],
        ),
        "'d' is a symbolic link",
    ),
    "through-an-inside-link": (
        lambda s: tar(s, [special("here", tarfile.SYMTYPE, "."), entry("here/here/pwned")]),
        "'here' is a symbolic link",
    ),
    "duplicate-file": (
        lambda s: tar(s, [entry("issues.jsonl", b"{}"), entry("issues.jsonl", b"[]")]),
        "listed twice",
    ),
    "file-then-dir-through-it": (
        lambda s: tar(s, [entry("data", b"x"), entry("data/issues.jsonl")]),
        "goes through 'data'",
    ),
    "gzip-bomb": (
        lambda s: tar(s, [entry("zeros.bin", b"\0" * (64 * 1024 * 1024))]),
        "decompression bomb",
    ),
    "huge-declared-size": (huge_declared_size, "over the limit of"),
    "200k-empty-entries": (many_entries, "over 50,000 entries"),
    "deep-path": (lambda s: tar(s, [entry("a/" * 200 + "f")]), "directories deep"),
    "long-pax-header": (
        lambda s: tar(s, [entry("n" * 2_000_000)], gz=False),
        "headers after",
    ),
    "nul-in-name": (lambda s: tar(s, [pax_named("ok\x00../../outside/pwned")]), "NUL byte"),
    "newline-in-name": (lambda s: tar(s, [entry("issues\n.jsonl")]), "'\\n'"),
    "backslash-traversal": (lambda s: tar(s, [entry("..\\..\\outside\\pwned")]), "backslash"),
    "not-utf8-name": (
        lambda s: tar(
            s, [entry(b"caf\xe9".decode("utf-8", "surrogateescape"))], fmt=tarfile.GNU_FORMAT
        ),
        "not valid UTF-8",
    ),
    "uncompressed-tar-link": (
        lambda s: tar(s, [special("ln", tarfile.SYMTYPE, "/")], gz=False),
        "symbolic link",
    ),
    "tar-cli-symlink-chain": (lambda s: tar_cli(s, cli_symlink_chain), "symbolic link"),
    "tar-cli-fifo": (lambda s: tar_cli(s, cli_fifo), "a FIFO"),
    "tar-cli-hardlink": (lambda s: tar_cli(s, cli_hardlink), "a hard link"),
    "tar-cli-gnu-sparse": (lambda s: tar_cli(s, cli_sparse("gnu")), "a sparse file"),
    "tar-cli-pax-sparse": (lambda s: tar_cli(s, cli_sparse("posix")), "a sparse file"),
    "zip-dotdot": (lambda s: zip_of(s, [("../../outside/pwned", b"x")]), "climbs out"),
    "zip-absolute": (lambda s: zip_of(s, [(str(s.outside / "pwned"), b"x")]), "absolute path"),
    "zip-symlink": (
        lambda s: zip_of(s, [(zip_typed("ln", 0o120777), b"../../outside")]),
        "'ln' is a symbolic link",
    ),
    "zip-device": (lambda s: zip_of(s, [(zip_typed("tty", 0o020666), b"")]), "character device"),
    "zip-fifo": (lambda s: zip_of(s, [(zip_typed("pipe", 0o010644), b"")]), "a FIFO"),
    "zip-bomb": (
        lambda s: zip_of(s, [("zeros.bin", b"\0" * (64 * 1024 * 1024))]),
        "decompression bomb",
    ),
    "zip-overlapping-entries": (zip_overlapping, "share data"),
    "zip-duplicate": (
        lambda s: zip_of(s, [("issues.jsonl", b"{}"), ("issues.jsonl", b"[]")]),
        "listed twice",
    ),
    "zip-backslash": (lambda s: zip_of(s, [("..\\..\\outside\\pwned", b"x")]), "backslash"),
}


@pytest.fixture
def imports(settings: Settings) -> Iterator[Imports]:
    app = App(settings.replace(queues="imports"))
    made = Imports(app)
    made.register(ProjectImporter())
    yield made
    app.close()


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_every_hostile_archive_is_refused_before_an_import_and_writes_nothing_outside(
    case: str, site: Site, imports: Imports
) -> None:
    build, fragment = CORPUS[case]
    source = build(site)
    before = snapshot(site)

    with pytest.raises(UploadRejected, match=re.escape(fragment)) as refused:
        validate_upload(source)
    assert refused.value.entry or "archive" in str(refused.value)

    with pytest.raises(UploadRejected, match=re.escape(fragment)):
        start_project_import(imports, source, f"sqlite:///{site.work}/db", workdir=str(site.work))
    assert imports.recent() == [], "the refusal came before an import record"
    assert not (site.work / "db").exists()

    # Extraction on its own (as if validation had been skipped) refuses it too.
    kind = detect_kind(source)
    assert kind is not None
    unchecked = ValidatedUpload(source, kind, source.stat().st_size, (), 0)
    with pytest.raises(UploadRejected):
        extract(unchecked, site.work / "root")

    assert snapshot(site) == before, "nothing outside the import directory changed"
    assert site.sentinel.read_bytes() == SENTINEL


def test_the_corpus_is_at_least_twenty_archives() -> None:
    assert len(CORPUS) >= 20


def test_a_good_export_still_extracts_with_private_modes(site: Site) -> None:
    source = tar(site, [directory("data"), entry("data/issues.jsonl", b"{}\n"), entry("x/y/z")])
    upload = validate_upload(source)
    assert [e.name for e in upload.entries] == [
        "project.json",
        "data",
        "data/issues.jsonl",
        "x/y/z",
    ]
    root = extract(upload, site.work / "root")
    assert (root / "data" / "issues.jsonl").read_bytes() == b"{}\n"
    assert (root / "data").stat().st_mode & 0o777 == 0o700
    assert (root / "x" / "y" / "z").stat().st_mode & 0o777 == 0o600
    zipped = zip_of(site, [("data/issues.jsonl", b"{}\n" * 1000), ("docs/", b"")])
    root = extract(validate_upload(zipped), site.work / "zip")
    assert (root / "data" / "issues.jsonl").read_bytes() == b"{}\n" * 1000
    assert (root / "docs").is_dir()


def test_extraction_needs_a_fresh_real_directory(site: Site) -> None:
    upload = validate_upload(tar(site, []))
    (site.work / "full").mkdir()
    (site.work / "full" / "project.json").write_text("already here")
    with pytest.raises(UploadRejected, match="not empty"):
        extract(upload, site.work / "full")
    os.symlink(site.outside, site.work / "link")
    with pytest.raises(UploadRejected, match="not a link"):
        extract(upload, site.work / "link")
    assert snapshot(site)["outside/sentinel"] == SENTINEL


def test_a_link_planted_in_the_destination_is_never_followed(site: Site) -> None:
    """Extraction into a directory where someone planted ``data -> outside`` between the
    emptiness check and the write: the member is refused, not written through the link."""
    from conveyor.features.imports.archive import Tree

    with Tree(site.work / "root") as tree:
        os.symlink(site.outside, site.work / "root" / "data")
        with pytest.raises(UploadRejected, match="not a directory"):
            tree.write("data/sentinel", ("data", "sentinel"), [b"overwritten"], 11)
        os.symlink(site.sentinel, site.work / "root" / "file")
        with pytest.raises(UploadRejected, match="would replace something"):
            tree.write("file", ("file",), [b"overwritten"], 11)
    assert site.sentinel.read_bytes() == SENTINEL


#: Runs the check in a child and prints the child's peak RSS (ru_maxrss of RUSAGE_CHILDREN,
#: in KiB on Linux). The launcher is a bare interpreter: a child started from pytest itself
#: would inherit pytest's high-water mark across fork and exec.
LAUNCH = """
import resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True,
                     text=True, check=True).stdout
print(out.strip())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
CHECK = """
import sys, time
from conveyor.errors import UploadRejected
from conveyor.features.imports import validate_upload
if len(sys.argv) > 1:
    started = time.monotonic()
    try:
        validate_upload(sys.argv[1])
        print("accepted", time.monotonic() - started)
    except UploadRejected as exc:
        print("refused", time.monotonic() - started, exc)
"""


def peak_rss(*args: str) -> tuple[str, float]:
    """The check's output and the peak RSS (MB) of the process that ran it."""
    lines = subprocess.run(
        [PYTHON, "-c", LAUNCH, CHECK, *args],
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    return "\n".join(lines[:-1]), int(lines[-1]) / 1024


def test_200k_entries_are_refused_in_bounded_memory(site: Site) -> None:
    _, baseline = peak_rss()
    tar_path = many_entries(site)
    zip_path = site.upload / "many.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for i in range(200_000):
            archive.writestr(f"e{i}", b"")
    for path in (tar_path, zip_path):
        out, peak = peak_rss(str(path))
        status, seconds, message = out.split(" ", 2)
        assert status == "refused" and "over 50,000 entries" in message, out
        print(
            f"{path.name} ({path.stat().st_size:,} bytes, 200,000 entries): refused in "
            f"{float(seconds):.2f} s, peak RSS {peak:.1f} MB (interpreter + imports alone: "
            f"{baseline:.1f} MB)"
        )
        assert peak < 100, f"{path.name}: peak RSS {peak:.1f} MB"


WORST = [
    "symlink-chain",
    "cve-2025-4517-long-chain",
    "hardlink-outside",
    "gzip-bomb",
    "zip-symlink",
    "200k-empty-entries",
]


@pytest.mark.parametrize("case", WORST)
def test_conveyor_import_run_refuses_the_worst_cases(
    case: str, site: Site, redis_url: str, r: object
) -> None:
    build, fragment = CORPUS[case]
    source = build(site)
    before = snapshot(site)
    env = python_env(CONVEYOR_REDIS_URL=redis_url)
    db = f"sqlite:///{site.work / 'db'}"
    run = subprocess.run(  # noqa: PLW1510 (the exit status is asserted below)
        [
            PYTHON,
            "-m",
            "conveyor.cli",
            "import",
            "run",
            str(source),
            "--db",
            db,
            "--workdir",
            str(site.work),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert fragment.strip("'") in run.stderr.replace("\n", " ") or fragment in run.stderr
    assert "started" not in run.stdout
    status = subprocess.run(
        [PYTHON, "-m", "conveyor.cli", "import", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "no imports" in status.stdout
    assert snapshot(site) == before and site.sentinel.read_bytes() == SENTINEL
    assert list(site.work.iterdir()) == []


def test_retry_missing_checks_a_swapped_source_before_a_new_import(
    site: Site, imports: Imports
) -> None:
    from apps.imports import fixtures
    from support import running_worker, wait_for

    source = fixtures.build(site.upload / "export.tar.gz", issue_count=2, per_issue=0)
    db = f"sqlite:///{site.work / 'db'}"
    first = start_project_import(imports, source, db, workdir=str(site.work))
    with running_worker(imports.app):
        wait_for(lambda: not imports.get(first).active, timeout=60)
    assert imports.get(first).status == "finished"
    hostile = CORPUS["cve-2025-4517-long-chain"][0](site)
    hostile.replace(source)
    with pytest.raises(UploadRejected, match="symbolic link"):
        imports.retry_missing(first)
    assert [i.id for i in imports.recent()] == [first]
    assert site.sentinel.read_bytes() == SENTINEL
