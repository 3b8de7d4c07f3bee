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


class JavaCompileError(RuntimeError):
    """``javac`` rejected a driver; the message carries javac's own diagnostics."""

    def __init__(self, names: tuple[str, ...], returncode: int, stderr: str) -> None:
        super().__init__(f"javac failed (exit {returncode}) compiling {', '.join(names)}:\n{stderr}")
        self.stderr = stderr


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
    # Compile into a private directory and rename it into place, so that concurrent
    # test runs never see (or run) a half-written class directory.
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # left behind, incomplete, by an interrupted older run
        shutil.rmtree(out, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        result = subprocess.run(
            [str(java_home() / "bin" / "javac"), "-nowarn", "-d", str(staging), "-cp", classpath(), *map(str, sources)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise JavaCompileError(names, result.returncode, result.stderr)
        (staging / ".complete").touch()
        try:
            staging.rename(out)
        except OSError:
            if not (out / ".complete").exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
