"""Compile and run small Java programs against the Hadoop client jars that pyspark ships.

The tests prove compatibility with Hadoop's own client classes (``YarnClient``, the
compiled protobuf descriptors), so they compile tiny drivers from ``tests/java/`` with
``javac`` and run them with the jars of the installed ``pyspark`` on the classpath.
Compiled classes are cached under the system temp dir, keyed by the sources and jars,
so a test run compiles each driver once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    jvm_options: Sequence[str] = (),
    extra_jars: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``main_class`` with the Hadoop jars; ``conf_dir`` goes first on the classpath
    (that is how Hadoop's ``Configuration`` finds ``yarn-site.xml``/``core-site.xml``).
    ``jvm_options`` go before the class name (e.g. :func:`quiet_jvm_options`); ``extra_jars``
    go after the Hadoop jars' classes; ``env`` is added to this process's environment."""
    cp_extra = [conf_dir] if conf_dir is not None else []
    env = dict(os.environ, **(env or {}), JAVA_HOME=str(java_home()))
    if conf_dir is not None:
        env["HADOOP_CONF_DIR"] = str(conf_dir)
    return subprocess.run(
        [str(java_home() / "bin" / "java"), *jvm_options, "-cp", classpath(*cp_extra, classes, *extra_jars), main_class, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ---------------------------------------------------------------------------------------
# Quiet logging: pyspark's jars log through log4j 2 (log4j-core 2.25 with the
# log4j-1.2-api bridge and log4j-slf4j2-impl; there is no reload4j), and Hadoop's shaded
# client logs through slf4j into it. With no configuration log4j 2 prints ERRORs to
# *stdout*, and Hadoop's ``-Dhadoop.root.logger`` only means something to a log4j 1
# ``log4j.properties``, which log4j 2 does not read. So drivers get an explicit log4j 2
# configuration: WARN and above, to stderr, leaving stdout to the driver's own output.

LOG4J2_STDERR_PROPERTIES = """\
# log4j 2 configuration for test drivers: WARN and above to stderr, nothing to stdout
status = error
dest = err
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = stderr
"""


def stderr_logging_config() -> Path:
    """A log4j 2 properties file (cached in the temp dir) sending WARN+ logs to stderr."""
    digest = hashlib.sha256(LOG4J2_STDERR_PROPERTIES.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "cortex-rm-java" / f"log4j2-stderr-{digest}.properties"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(LOG4J2_STDERR_PROPERTIES)
        os.replace(tmp, path)
    return path


def quiet_jvm_options() -> list[str]:
    """JVM options for a short-lived test driver: logging to stderr at WARN, fast startup."""
    return [
        f"-Dlog4j2.configurationFile={stderr_logging_config()}",
        # a driver runs for seconds: skip the optimising JIT and the parallel collector
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
    ]


# ---------------------------------------------------------------------------------------
# YarnClientDriver: Hadoop's own YarnClient, one subcommand per process.


@dataclass(frozen=True)
class DriverOutcome:
    """What one run of a driver did: its exit status, raw output, and the parsed JSON line
    (``None`` when stdout was not exactly one JSON object)."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    payload: dict[str, Any] | None

    def describe(self) -> str:
        """The command, exit status, stdout and the tail of stderr, for assertion messages."""
        stderr = self.stderr if len(self.stderr) <= 8000 else "...\n" + self.stderr[-8000:]
        return (
            f"YarnClientDriver {' '.join(self.args)}\n"
            f"exit status: {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n"
            f"--- stderr ---\n{stderr}"
        )


def parse_json_line(stdout: str) -> dict[str, Any] | None:
    """The single JSON object a driver printed, or ``None`` if stdout is anything else."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    try:
        value = json.loads(lines[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class YarnClientDriver:
    """Runs ``tests/java/YarnClientDriver.java``: the real ``YarnClient`` from pyspark's
    Hadoop 3.5 jars, configured only by ``conf_dir`` (``yarn-site.xml``, ``core-site.xml``,
    as written by ``cortex-rm client-config``; client retry settings belong there).

    Each call starts one JVM, runs one subcommand and parses its one line of JSON::

        driver = YarnClientDriver(conf_dir)
        app_id = driver.run("submit", "sleeper", "default", "--tags", "a,b")["applicationId"]
        assert driver.run("report", app_id)["state"] == "ACCEPTED"
        err = driver.expect_exception("report", "application_1_9999")
        assert err["exception"] == "org.apache.hadoop.yarn.exceptions.ApplicationNotFoundException"

    Exit statuses: 0 result, 3 the client threw (``{"exception", "message", "causes"}``),
    2 bad command line (``{"exception": "usage", ...}``).
    """

    MAIN_CLASS = "YarnClientDriver"
    EXIT_OK = 0
    EXIT_USAGE = 2
    EXIT_CLIENT_EXCEPTION = 3

    def __init__(self, conf_dir: Path, *, timeout: float = 120) -> None:
        self.conf_dir = Path(conf_dir)
        self.timeout = timeout
        self.classes = compile_driver(self.MAIN_CLASS)

    def invoke(self, *args: str, timeout: float | None = None) -> DriverOutcome:
        """Run one subcommand and return what happened, whatever it was.

        A driver that outlives ``timeout`` seconds is killed and reported as an
        AssertionError carrying whatever output it had produced."""
        limit = self.timeout if timeout is None else timeout
        try:
            proc = run_driver(
                self.MAIN_CLASS,
                list(args),
                classes=self.classes,
                conf_dir=self.conf_dir,
                timeout=limit,
                jvm_options=quiet_jvm_options(),
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                DriverOutcome(args, -1, _text(e.stdout), _text(e.stderr), None).describe()
                + f"\n(killed: no answer within {limit} s)"
            ) from None
        return DriverOutcome(args, proc.returncode, proc.stdout, proc.stderr, parse_json_line(proc.stdout))

    def run(self, *args: str, timeout: float | None = None) -> dict[str, Any]:
        """Run a subcommand that must succeed; return its JSON result."""
        outcome = self.invoke(*args, timeout=timeout)
        if outcome.returncode != self.EXIT_OK or outcome.payload is None:
            raise AssertionError("driver did not succeed with one JSON line\n" + outcome.describe())
        return outcome.payload

    def expect_exception(self, *args: str, exception: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Run a subcommand that must make the client throw; return ``{"exception", "message",
        "causes"}``. With ``exception``, the fully qualified class must match exactly."""
        outcome = self.invoke(*args, timeout=timeout)
        payload = outcome.payload
        if outcome.returncode != self.EXIT_CLIENT_EXCEPTION or payload is None or "exception" not in payload:
            raise AssertionError("driver did not report a client exception\n" + outcome.describe())
        if exception is not None and payload["exception"] != exception:
            raise AssertionError(f"expected {exception}, the client threw {payload['exception']}\n" + outcome.describe())
        return payload


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def labels_by_node(node_list: str) -> dict[str, str]:
    """NodeCLI's ``-list -showDetails`` text: each node's ``Node-Labels`` line, by Node-Id."""
    found: dict[str, str] = {}
    current = None
    for line in node_list.splitlines():
        first = line.split()[0] if line.split() else ""
        if re.fullmatch(r"[\w.\-]+:\d+", first):
            current = first
        match = re.match(r"\s*Node-Labels\s*:\s*(.*)$", line)
        if match and current is not None:
            found[current] = match.group(1).strip()
    return found
