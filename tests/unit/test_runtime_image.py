"""The runtime image (``cortex_rm/container/runtime_image.py``): the recipe's hash, the build cache
(one build per recipe, a damaged archive rebuilt, a crashed build cleaned up), and the node's cache
of unpacked roots (verified before unpacking, unpacked once, crash leftovers removed, pruned).

mmdebstrap never runs here: an injected runner records its argv and writes a tiny archive
instead.  The archives are real ``.tar.zst`` files made with the system's tar and zstd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rm.container.image_cache import ImageCache
from cortex_rm.container.runtime_image import (
    IMAGE_FORMAT,
    SOURCE_DATE_EPOCH,
    BuiltImage,
    CommandResult,
    ImageError,
    ImageRecipe,
    build_image,
    check_build_host,
    mount_points_under,
    recorded_image,
    sha256_of_file,
)

RECIPE = ImageRecipe(architecture="amd64")


def make_archive(path: Path, files: Mapping[str, bytes], devices: Sequence[str] = ()) -> Path:
    """A ``.tar.zst`` with ``files`` (and character devices ``devices``) under ``./``, compressed by zstd."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mtime, info.mode = len(data), SOURCE_DATE_EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
        for directory in sorted({name.rsplit("/", 1)[0] for name in devices}):
            info = tarfile.TarInfo(f"./{directory}/")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in devices:
            info = tarfile.TarInfo(f"./{name}")
            info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            tar.addfile(info)
    subprocess.run(["zstd", "-q", "-o", str(path)], input=raw.getvalue(), check=True)
    return path


class FakeMmdebstrap:
    """Records each call and writes an archive (its content from ``contents``) where mmdebstrap would."""

    def __init__(self, tmp_path: Path, exit_code: int = 0) -> None:
        self.tmp_path = tmp_path
        self.exit_code = exit_code
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.contents = b"java and python"

    def __call__(self, argv: Sequence[str], env: Mapping[str, str], say: object, /) -> CommandResult:
        self.calls.append((list(argv), dict(env)))
        target = Path(next(a for a in argv if a.endswith(".tar.zst")))
        if self.exit_code == 0:
            make_archive(target, {"usr/bin/python3": self.contents})
        else:
            target.write_bytes(b"")  # mmdebstrap leaves an empty file when it fails
        return CommandResult(self.exit_code, ("E: apt-get update failed",))


def build(
    cache: Path, runner: FakeMmdebstrap, recipe: ImageRecipe = RECIPE, lines: list[str] | None = None
) -> BuiltImage:
    """``build_image`` with the fake mmdebstrap, no host checks and a clock that stands still."""
    said = lines if lines is not None else []
    return build_image(recipe, cache, said.append, run=runner, preflight=lambda: None, clock=lambda: 0.0)


# ---------------------------------------------------------------- the recipe


def test_the_recipe_hash_is_stable_and_ignores_the_order_of_packages() -> None:
    """Equal recipes hash alike, in any package order; the hash is pinned, so a change to the build
    steps shows here (update it knowingly: every cache then builds the image again)."""
    shuffled = replace(RECIPE, packages=tuple(reversed(RECIPE.packages)))
    assert RECIPE.recipe_hash() == ImageRecipe(architecture="amd64").recipe_hash() == shuffled.recipe_hash()
    assert RECIPE.recipe_hash() == "8992e96d2ddb3aac78f68c461e3500a213ee77f108d893589b1a7d154df30665"


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "trixie"},
        {"variant": "essential"},
        {"packages": (*RECIPE.packages, "ca-certificates")},
        {"mirror": "http://mirror.example/debian"},
        {"security_mirror": "http://mirror.example/debian-security"},
        {"architecture": "arm64"},
        {"zstd_level": 19},
    ],
)
def test_every_field_of_the_recipe_changes_its_hash(change: dict[str, object]) -> None:
    """A recipe that differs in any field is another image, with another hash."""
    assert replace(RECIPE, **change).recipe_hash() != RECIPE.recipe_hash()  # type: ignore[arg-type]


def test_the_canonical_json_holds_the_format_version_and_the_fixed_steps() -> None:
    """The hashed JSON names the format version, the apt sources and the fixed time."""
    canonical = RECIPE.canonical()
    assert canonical["format"] == IMAGE_FORMAT
    assert canonical["source_date_epoch"] == SOURCE_DATE_EPOCH
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in canonical["sources"]  # type: ignore[operator]


def test_java_home_and_python_point_inside_the_image_for_its_architecture() -> None:
    """JAVA_HOME names Debian's OpenJDK 17 directory of the image's architecture."""
    assert RECIPE.java_home == "/usr/lib/jvm/java-17-openjdk-amd64"
    assert replace(RECIPE, architecture="arm64").java_home == "/usr/lib/jvm/java-17-openjdk-arm64"
    assert RECIPE.python == "/usr/bin/python3"


def test_the_mmdebstrap_command_builds_a_compressed_tar_as_root_from_the_recipe(tmp_path: Path) -> None:
    """Root mode, the variant, architecture and packages, the suite, a ``.tar.zst`` target (zstd by
    its suffix) and the three apt sources; the fixed time and mmdebstrap's chroot under the cache."""
    runner = FakeMmdebstrap(tmp_path)
    build(tmp_path / "cache", runner)
    [(argv, env)] = runner.calls
    assert argv[:5] == [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--architectures=amd64",
        "--include=netbase,openjdk-17-jre-headless,procps,python3",
    ]
    suite = argv.index("bookworm")
    assert argv[suite + 1].startswith(str(tmp_path / "cache" / "images" / ".building-"))
    assert argv[suite + 1].endswith(".tar.zst")
    assert argv[suite + 2 :] == RECIPE.sources()
    assert any(a.startswith("--customize-hook=") and "resolv.conf" in a for a in argv)
    assert env["SOURCE_DATE_EPOCH"] == str(SOURCE_DATE_EPOCH)
    assert env["ZSTD_CLEVEL"] == "9"
    assert env["TMPDIR"] == str(tmp_path / "cache" / "tmp")


# ---------------------------------------------------------------- the build cache


def test_a_build_names_the_archive_by_its_sha256_and_records_it_for_the_recipe(tmp_path: Path) -> None:
    """The archive lands at ``images/<sha256>.tar.zst`` with the hash of its bytes, and
    ``by-recipe/<recipe hash>`` records it with its sizes; no partial file is left."""
    cache = tmp_path / "cache"
    image = build(cache, FakeMmdebstrap(tmp_path))
    assert image.path == cache / "images" / f"{image.sha256}.tar.zst"
    assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest() == sha256_of_file(image.path)
    assert image.size == image.path.stat().st_size
    assert image.uncompressed_size is not None and image.uncompressed_size >= 10240  # a tar's blocks
    record = json.loads((cache / "by-recipe" / RECIPE.recipe_hash()).read_text())
    assert (record["sha256"], record["size"]) == (image.sha256, image.size)
    assert [p.name for p in (cache / "images").iterdir()] == [image.path.name]


def test_a_second_build_of_the_same_recipe_reuses_the_archive(tmp_path: Path) -> None:
    """mmdebstrap runs once; the second call answers from the record, with the same image."""
    runner, lines = FakeMmdebstrap(tmp_path), list[str]()
    first = build(tmp_path / "cache", runner)
    second = build(tmp_path / "cache", runner, lines=lines)
    assert second == first and len(runner.calls) == 1
    assert any("built already" in line for line in lines)


def test_another_recipe_is_built_anew(tmp_path: Path) -> None:
    """A recipe with one more package is not answered by the other recipe's archive."""
    runner = FakeMmdebstrap(tmp_path)
    build(tmp_path / "cache", runner)
    runner.contents = b"another image"
    other = build(tmp_path / "cache", runner, replace(RECIPE, packages=(*RECIPE.packages, "less")))
    assert len(runner.calls) == 2 and recorded_image(tmp_path / "cache", RECIPE.recipe_hash()) != other


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_recorded_archive_that_is_gone_or_damaged_is_built_again(tmp_path: Path, damage: str) -> None:
    """The record is trusted only while its archive exists with the same size and SHA-256."""
    runner = FakeMmdebstrap(tmp_path)
    image = build(tmp_path / "cache", runner)
    if damage == "delete":
        image.path.unlink()
    else:
        data = bytearray(image.path.read_bytes())
        data[-1] ^= 0xFF
        image.path.write_bytes(bytes(data))
    again = build(tmp_path / "cache", runner)
    assert len(runner.calls) == 2 and again.sha256 == sha256_of_file(again.path)


def test_a_failed_build_says_what_mmdebstrap_said_and_leaves_nothing(tmp_path: Path) -> None:
    """mmdebstrap's exit status and last lines reach the error, with what to check; no partial
    archive and no record remain."""
    cache = tmp_path / "cache"
    with pytest.raises(ImageError, match=r"(?s)exit status 1.*apt-get update failed.*is reachable"):
        build(cache, FakeMmdebstrap(tmp_path, exit_code=1))
    assert list((cache / "images").iterdir()) == [] and list((cache / "by-recipe").iterdir()) == []


def test_what_a_crashed_build_left_is_removed_by_the_next(tmp_path: Path) -> None:
    """A partial archive and a chroot in ``tmp/`` (nothing mounted there) go before the next build."""
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    (cache / "images" / ".building-0123456789abcdef.tar.zst").write_bytes(b"half")
    (cache / "tmp" / "mmdebstrap.XYZ" / "usr").mkdir(parents=True)
    image = build(cache, FakeMmdebstrap(tmp_path))
    assert [p.name for p in (cache / "images").iterdir()] == [image.path.name]
    assert list((cache / "tmp").iterdir()) == []


def test_mounts_left_in_a_crashed_chroot_are_found() -> None:
    """Mount points at or under the directory count (octal escapes decoded); a sibling does not."""
    mountinfo = (
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "90 22 0:5 / /c/tmp/mmdebstrap.X/proc rw - proc proc rw\n"
        "91 22 0:6 / /c/tmp/my\\040dir rw - tmpfs tmpfs rw\n"
        "92 22 0:7 / /c/tmpfoo rw - tmpfs tmpfs rw\n"
    )
    assert mount_points_under(Path("/c/tmp"), mountinfo) == ["/c/tmp/mmdebstrap.X/proc", "/c/tmp/my dir"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_crashed_chroot_with_mounts_left_is_not_deleted_and_the_error_says_how_to_unmount(tmp_path: Path) -> None:
    """A file system still mounted in a leftover chroot (mmdebstrap killed mid-build leaves /proc,
    /sys, /dev/pts there) stops the build before anything is deleted, naming the umount command."""
    chroot = tmp_path / "cache" / "tmp" / "mmdebstrap.XYZ"
    (chroot / "proc").mkdir(parents=True)
    (chroot / "keep").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(chroot / "proc")], check=True)
    try:
        with pytest.raises(ImageError, match=f"unmount them \\(umount -R {chroot / 'proc'}\\)"):
            build(tmp_path / "cache", FakeMmdebstrap(tmp_path))
        assert (chroot / "keep").exists()
    finally:
        subprocess.run(["umount", str(chroot / "proc")], check=True)


def test_a_build_waits_for_another_build_in_the_same_cache_and_says_so(tmp_path: Path) -> None:
    """While another process holds the cache's lock, the build says whom it waits for, then goes on."""
    import fcntl

    cache = tmp_path / "cache"
    (cache).mkdir()
    holder = (cache / ".lock").open("a+")
    holder.write("pid 4242\n")
    holder.flush()
    fcntl.flock(holder, fcntl.LOCK_EX)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("waiting"):
            threading.Thread(target=holder.close).start()  # the other build ends

    image = build_image(RECIPE, cache, say, run=FakeMmdebstrap(tmp_path), preflight=lambda: None)
    assert any(line.startswith("waiting for pid 4242 to finish building") for line in lines)
    assert image.path.exists()


@pytest.mark.parametrize(
    ("which", "euid", "message"),
    [
        ({"zstd": "/usr/bin/zstd", "tar": "/usr/bin/tar"}, 0, "mmdebstrap is not installed: run scripts/install"),
        ({"mmdebstrap": "/usr/bin/mmdebstrap", "tar": "/usr/bin/tar"}, 0, "zstd is not installed"),
        ({"mmdebstrap": "/x", "zstd": "/x", "tar": "/x"}, 1000, "needs root"),
    ],
)
def test_a_machine_that_cannot_build_is_told_what_to_do(which: dict[str, str], euid: int, message: str) -> None:
    """A missing mmdebstrap or zstd points to scripts/install; a user other than root is told to be root."""
    with pytest.raises(ImageError, match=message):
        check_build_host(which.get, euid)
    check_build_host({"mmdebstrap": "/x", "zstd": "/x", "tar": "/x"}.get, 0)


# ---------------------------------------------------------------- the node's cache of roots


def test_an_archive_is_verified_and_unpacked_into_a_root_named_by_its_sha256(tmp_path: Path) -> None:
    """The root holds the archive's files (and no marker: that lives beside it), the device
    nodes of ``/dev`` are not made, and ``roots/`` is closed to other users of the host."""
    archive = make_archive(
        tmp_path / "image.tar.zst", {"usr/bin/python3": b"py", "etc/os-release": b"12"}, ["dev/null"]
    )
    sha = sha256_of_file(archive)
    cache = ImageCache(tmp_path / "node")
    assert cache.path_of(sha) is None
    root = cache.unpack(archive, sha)
    assert root == tmp_path / "node" / "roots" / sha == cache.path_of(sha)
    assert (root / "usr/bin/python3").read_bytes() == b"py"
    assert sorted(p.name for p in root.iterdir()) == ["dev", "etc", "usr"]
    assert list((root / "dev").iterdir()) == []
    assert (tmp_path / "node" / "roots" / f"{sha}.complete").is_file()
    assert (tmp_path / "node" / "roots").stat().st_mode & 0o777 == 0o711  # searchable by containers' unprivileged roots, listable by nobody


def test_an_unpacked_root_is_reused_without_reading_the_archive(tmp_path: Path) -> None:
    """The second call returns the same root even when the archive is gone."""
    archive = make_archive(tmp_path / "image.tar.zst", {"a": b"1"})
    sha = sha256_of_file(archive)
    cache = ImageCache(tmp_path / "node")
    root = cache.unpack(archive, sha)
    (root / "a").write_bytes(b"still the first")  # (only to see that nothing is unpacked again)
    archive.unlink()
    assert cache.unpack(archive, sha) == root and (root / "a").read_bytes() == b"still the first"


def test_an_archive_with_another_sha256_is_refused_and_nothing_is_deleted(tmp_path: Path) -> None:
    """A mismatch names both hashes; the archive, other roots and their markers stay."""
    cache = ImageCache(tmp_path / "node")
    good = make_archive(tmp_path / "good.tar.zst", {"a": b"1"})
    other_root = cache.unpack(good, sha256_of_file(good))
    bad = make_archive(tmp_path / "bad.tar.zst", {"a": b"2"})
    wanted = "ab" * 32
    with pytest.raises(ImageError, match=f"SHA-256 {sha256_of_file(bad)}, not {wanted}.*fetch it again"):
        cache.unpack(bad, wanted)
    assert bad.exists() and other_root.is_dir() and cache.path_of(sha256_of_file(good)) == other_root
    assert cache.path_of(wanted) is None and not (tmp_path / "node" / "roots" / wanted).exists()


def test_a_half_extraction_and_a_root_without_its_marker_are_replaced(tmp_path: Path) -> None:
    """What a crash left (an ``.unpacking-*`` directory; a renamed root whose marker was never
    written) is removed, and the image is unpacked again from its archive."""
    archive = make_archive(tmp_path / "image.tar.zst", {"a": b"whole"})
    sha = sha256_of_file(archive)
    roots = tmp_path / "node" / "roots"
    (roots / f".unpacking-{sha}-999" / "usr").mkdir(parents=True)
    (roots / sha).mkdir()
    (roots / sha / "a").write_bytes(b"half")
    cache = ImageCache(tmp_path / "node")
    assert cache.path_of(sha) is None
    root = cache.unpack(archive, sha)
    assert (root / "a").read_bytes() == b"whole"
    assert sorted(p.name for p in roots.iterdir()) == [".lock", sha, f"{sha}.complete"]


def test_an_archive_tar_cannot_read_fails_and_leaves_no_root(tmp_path: Path) -> None:
    """Bytes that match the hash but are no tar.zst: tar's complaint in the error, nothing left behind."""
    archive = tmp_path / "junk.tar.zst"
    archive.write_bytes(b"not zstd at all")
    cache = ImageCache(tmp_path / "node")
    with pytest.raises(ImageError, match="tar could not unpack"):
        cache.unpack(archive, sha256_of_file(archive))
    assert sorted(p.name for p in (tmp_path / "node" / "roots").iterdir()) == [".lock"]


def test_prune_removes_the_roots_of_other_images_only(tmp_path: Path) -> None:
    """Roots (and markers) not in ``keep`` go, as do crash leftovers; the kept root stays whole."""
    cache = ImageCache(tmp_path / "node")
    shas = []
    for n in range(3):
        archive = make_archive(tmp_path / f"{n}.tar.zst", {"n": str(n).encode()})
        shas.append(sha256_of_file(archive))
        cache.unpack(archive, shas[-1])
    (tmp_path / "node" / "roots" / ".unpacking-x-1").mkdir()
    assert cache.prune(keep={shas[1]}) == sorted([shas[0], shas[2]])
    assert [cache.path_of(s) is not None for s in shas] == [False, True, False]
    assert sorted(p.name for p in (tmp_path / "node" / "roots").iterdir()) == [".lock", shas[1], f"{shas[1]}.complete"]


@pytest.mark.parametrize("bad", ["../../etc", "AB" * 32, "ab" * 31, ""])
def test_a_name_that_is_not_a_sha256_is_refused_before_it_becomes_a_path(tmp_path: Path, bad: str) -> None:
    """Only 64 lowercase hex digits name an image: nothing else reaches the file system."""
    cache = ImageCache(tmp_path / "node")
    with pytest.raises(ImageError, match="is not a SHA-256"):
        cache.path_of(bad)
    with pytest.raises(ImageError, match="is not a SHA-256"):
        cache.unpack(tmp_path / "whatever", bad)
