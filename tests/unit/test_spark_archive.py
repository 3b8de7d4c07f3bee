"""The archive of Spark's jars that ``client-config`` uploads (``spark.yarn.archive``): the
same jars always give the same bytes (so its SHA-256 names it), it is packed once per set of
jars, and the client configuration names it instead of any path of the client's machine."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from cortex_rm.client_config import RMAddresses, core_site, spark_defaults
from cortex_rm.spark_archive import KEEP_ARCHIVES, ArchiveError, build_archive
from cortex_rm.yarn.addresses import HostPort


def spark_home(tmp_path: Path, jars: dict[str, bytes]) -> Path:
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    for name, data in jars.items():
        (home / "jars" / name).write_bytes(data)
    (home / "jars" / "README").write_text("not a jar")
    return home


def test_the_archive_holds_every_jar_at_its_root_stored_and_is_named_by_its_bytes(tmp_path: Path) -> None:
    """Every ``*.jar`` (nothing else) at the zip's root, uncompressed, readable; the digest is the file's."""
    home = spark_home(tmp_path, {"b.jar": b"B" * 1000, "a.jar": os.urandom(5000)})
    archive, digest = build_archive(home, tmp_path / "cache", lambda _: None)
    with zipfile.ZipFile(archive) as z:
        assert [i.filename for i in z.infolist()] == ["a.jar", "b.jar"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert z.read("b.jar") == b"B" * 1000
    assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_the_same_jars_give_the_same_archive_and_a_second_call_packs_nothing(tmp_path: Path) -> None:
    """Packed twice from scratch (other cache, other file times): identical bytes.  Asked again
    with the same cache, the packed archive is reused without a word."""
    jars = {"x.jar": b"x" * 300, "y.jar": b"y" * 700}
    first = build_archive(spark_home(tmp_path / "1", jars), tmp_path / "c1", lambda _: None)
    home = spark_home(tmp_path / "2", jars)
    os.utime(home / "jars" / "x.jar", (1, 1))
    second = build_archive(home, tmp_path / "c2", lambda _: None)
    assert first[1] == second[1] and first[0].read_bytes() == second[0].read_bytes()
    said: list[str] = []
    assert build_archive(home, tmp_path / "c2", said.append) == second and said == []


def test_changed_jars_are_packed_again(tmp_path: Path) -> None:
    """A jar that changes (size or time) makes a new archive with a new name."""
    home = spark_home(tmp_path, {"x.jar": b"1"})
    _, before = build_archive(home, tmp_path / "cache", lambda _: None)
    (home / "jars" / "x.jar").write_bytes(b"22")
    _, after = build_archive(home, tmp_path / "cache", lambda _: None)
    assert before != after


def test_the_cache_keeps_only_the_most_recently_used_archives(tmp_path: Path) -> None:
    """Every Spark installation makes its own zip; the cache keeps the KEEP_ARCHIVES last used
    ones (a reused archive counts as used) and removes the others with their digests."""
    cache = tmp_path / "cache"
    homes = [spark_home(tmp_path / str(i), {f"{i}.jar": bytes([i]) * 10}) for i in range(KEEP_ARCHIVES + 2)]
    made = []
    for i, home in enumerate(homes[: KEEP_ARCHIVES + 1]):
        archive, _ = build_archive(home, cache, lambda _: None)
        os.utime(archive, (i, i))  # an order on a coarse clock
        made.append(archive)
    assert not made[0].exists() and not made[0].with_suffix(".sha256").exists()
    build_archive(homes[1], cache, lambda _: None)  # used again: now the newest
    newest, _ = build_archive(homes[-1], cache, lambda _: None)
    assert sorted(cache.glob("*.zip")) == sorted([made[1], made[3], newest])
    assert len(list(cache.glob("*.sha256"))) == KEEP_ARCHIVES


def test_a_directory_without_jars_is_not_a_spark_installation(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="holds no jars; is SPARK_HOME a Spark installation"):
        build_archive(spark_home(tmp_path, {}), tmp_path / "cache", lambda _: None)


def test_the_client_configuration_names_the_cluster_file_system_and_the_uploaded_archive() -> None:
    """fs.defaultFS is the RM's WebHDFS; with an archive, no path of this machine is written."""
    rm = RMAddresses.from_client_address(HostPort("rm.example", 8032))
    assert core_site(rm) == {"fs.defaultFS": f"webhdfs://{rm.webapp}"}
    text = spark_defaults("webhdfs://rm.example:8088/user/u/.cortex/spark-archives/spark-libs-ab.zip", Path("/opt/spark"))
    assert "spark.yarn.archive webhdfs://rm.example:8088/user/u/.cortex/spark-archives/spark-libs-ab.zip" in text
    assert "/opt/spark" not in text
    assert "spark.yarn.jars local:/opt/spark/jars/*" in spark_defaults(None, Path("/opt/spark"))
