"""Compile and run small Java programs against the Hadoop client jars that pyspark ships.

The tests prove compatibility with Hadoop's own client classes (``YarnClient``, the
compiled protobuf descriptors), so they compile tiny drivers from ``tests/java/`` with
``javac`` and run them with the jars of the installed ``pyspark`` on the classpath.
Compiled classes are cached under the system temp dir, keyed by the sources and jars,
so a test run compiles each driver once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

JAVA_SOURCES = Path(__file__).resolve().parents[1] / "java"


def java_home() -> Path:
    """The JDK to use: ``$JAVA_HOME``, else Debian's OpenJDK 17."""
    env = os.environ.get("JAVA_HOME")
    if env:
        return Path(env)
    return Path("/usr/lib/jvm/java-17-openjdk-amd64")


def spark_home() -> Path:
    """The installed pyspark package directory (it holds ``bin/`` and ``jars/``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def hadoop_jars() -> list[Path]:
    """Every jar pyspark ships: Hadoop's client API and runtime, Spark's YARN module, ..."""
    jars = sorted((spark_home() / "jars").glob("*.jar"))
    if not any(j.name.startswith("hadoop-client-api-") for j in jars):
        raise RuntimeError(f"no hadoop-client-api jar under {spark_home() / 'jars'}; reinstall pyspark")
    return jars


def classpath(*extra: Path) -> str:
    return os.pathsep.join(str(p) for p in (*extra, *hadoop_jars()))


def compile_driver(*names: str) -> Path:
    """Compile ``tests/java/<name>.java`` files and return the directory holding the classes."""
    if shutil.which(str(java_home() / "bin" / "javac")) is None:
        raise RuntimeError(f"javac not found under {java_home()}; install openjdk-17-jdk-headless")
    sources = [JAVA_SOURCES / f"{n}.java" for n in names]
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.read_bytes())
    for jar in hadoop_jars():
        digest.update(jar.name.encode())
    out = Path(tempfile.gettempdir()) / "cortex-rm-java" / digest.hexdigest()[:16]
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(java_home() / "bin" / "javac"), "-nowarn", "-d", str(out), "-cp", classpath(), *map(str, sources)],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / ".complete").touch()
    return out


def run_driver(
    main_class: str,
    args: list[str],
    *,
    classes: Path,
    conf_dir: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``main_class`` with the Hadoop jars; ``conf_dir`` goes first on the classpath
    (that is how Hadoop's ``Configuration`` finds ``yarn-site.xml``/``core-site.xml``)."""
    cp_extra = [conf_dir] if conf_dir is not None else []
    env = dict(os.environ, JAVA_HOME=str(java_home()))
    if conf_dir is not None:
        env["HADOOP_CONF_DIR"] = str(conf_dir)
    return subprocess.run(
        [str(java_home() / "bin" / "java"), "-cp", classpath(*cp_extra, classes), main_class, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
