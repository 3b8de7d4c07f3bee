"""Run Hadoop's own ``yarn logs`` (``org.apache.hadoop.yarn.client.cli.LogsCLI``, from the jars
pyspark ships) against a cluster, with a client's conf dir first on the classpath as ``bin/yarn``
puts ``HADOOP_CONF_DIR``.

Two things stand between pyspark's jars and a working LogsCLI, and a Hadoop installation has
both:

* LogsCLI parses JSON with Jettison, relocated into Hadoop's shaded namespace, and the shaded
  runtime jar leaves it out. :func:`shaded_jettison` relocates Debian's own Jettison
  (``libjettison-java``) with jarjar (``libjarjar-java``) exactly as Hadoop's shading names it,
  once, cached in ``~/.cache/cortex-rm``.
* ``LogsCLI.run`` builds a Jersey 2 client before anything else, and no jar at hand has it.
  ``tests/java/YarnLogs.java`` calls LogsCLI's own ``runCommand`` instead; for a finished
  application the client is never used (the logs come from the file system).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.java import compile_driver, java_home, quiet_jvm_options, run_driver

JETTISON_JAR = Path("/usr/share/java/jettison.jar")
JARJAR_JAR = Path("/usr/share/java/jarjar.jar")
#: How Hadoop's shading renames Jettison's packages (what LogsCLI's bytecode refers to).
RELOCATION = "rule org.codehaus.jettison.** org.apache.hadoop.shaded.org.codehaus.jettison.@1\n"


def shaded_jettison(cache: Path | None = None) -> Path:
    """Debian's Jettison with its packages relocated as Hadoop's shaded jars expect them."""
    for jar, package in ((JETTISON_JAR, "libjettison-java"), (JARJAR_JAR, "libjarjar-java")):
        if not jar.exists():
            raise RuntimeError(f"{jar} is missing: install Debian's {package} (scripts/install does)")
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cortex-rm"
    stat = JETTISON_JAR.resolve().stat()
    out = cache / f"jettison-hadoop-shaded-{stat.st_size}-{int(stat.st_mtime)}.jar"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        rules = Path(work) / "rules.txt"
        rules.write_text(RELOCATION)
        staged = Path(work) / out.name
        subprocess.run(
            [
                str(java_home() / "bin" / "java"),
                "-cp",
                os.pathsep.join(str(p) for p in (JARJAR_JAR, *sorted(Path("/usr/share/java").glob("asm*.jar")))),
                "com.tonicsystems.jarjar.Main",
                "process",
                str(rules),
                str(JETTISON_JAR),
                str(staged),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        shutil.move(staged, out)
    return out


def yarn_logs(conf_dir: Path, *args: str, user: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``yarn logs <args>`` (e.g. ``-applicationId application_..._0001``) as ``user``."""
    return run_driver(
        "YarnLogs",
        list(args),
        classes=compile_driver("YarnLogs"),
        conf_dir=conf_dir,
        extra_jars=(shaded_jettison(),),
        env={"HADOOP_USER_NAME": user} if user is not None else None,
        timeout=timeout,
        jvm_options=quiet_jvm_options(),
    )


def aggregated_logs(conf_dir: Path, app_id: str, contains: str = "", timeout_s: float = 120) -> str:
    """What ``yarn logs -applicationId app_id`` prints once it succeeds and holds ``contains``.

    The nodes aggregate a finished application's logs right after its end, each on its own:
    until the first has, LogsCLI finds no file and fails; until the last has, it prints part
    of the logs.  So it is asked again, each second, until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = yarn_logs(conf_dir, "-applicationId", app_id)
        if result.returncode == 0 and contains in result.stdout:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(
                f"yarn logs -applicationId {app_id} did not print {contains!r} within {timeout_s:.0f} s "
                f"(exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        time.sleep(1)
