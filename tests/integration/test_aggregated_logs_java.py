"""Hadoop's own readers read the aggregated log files that Cortex writes in Python.

A small Java program (written into a temp dir and compiled with ``javac`` against the
Hadoop 3.5 client jars that pyspark ships) opens our file with
``AggregatedLogFormat.LogReader`` and ``TFile.Reader``, asks ``LogAggregationUtils`` and
the TFile controller where a node's file lives, encodes numbers and strings with TFile's
``Utils`` and Java's ``writeUTF``, and runs ``yarn logs`` (``LogsCLI``) on a local file
system with no ResourceManager.

``yarn logs`` runs as ``tests/support/logs_cli.py`` runs it (LogsCLI's own command logic,
without the Jersey web-service client no jar at hand ships; Debian's Jettison relocated as
Hadoop's shading names it).
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from cortex_rm.container.aggregated_logs import (
    ContainerLogFile,
    encode_java_utf,
    remote_log_path,
    write_aggregated_logs,
)
from cortex_rm.container.tfile_encoding import encode_vlong
from tests.support.java import classpath, java_home, parse_json_line, quiet_jvm_options, run_driver
from tests.support.logs_cli import shaded_jettison, yarn_logs

pytestmark = pytest.mark.integration

APP = "application_1700000000000_0007"
NODE = "node-1.example:8041"
C1 = "container_1700000000000_0007_01_000001"
C2 = "container_1700000000000_0007_01_000002"
C3 = "container_e17_1700000000000_0007_02_000003"

PROBE = r"""
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.File;
import java.io.StringWriter;
import java.security.MessageDigest;
import java.util.Map;
import java.util.TreeMap;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.file.tfile.TFile;
import org.apache.hadoop.io.file.tfile.Utils;
import org.apache.hadoop.yarn.api.records.ApplicationAccessType;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.api.records.NodeId;
import org.apache.hadoop.yarn.logaggregation.AggregatedLogFormat.LogKey;
import org.apache.hadoop.yarn.logaggregation.AggregatedLogFormat.LogReader;
import org.apache.hadoop.yarn.logaggregation.LogAggregationUtils;
import org.apache.hadoop.yarn.logaggregation.filecontroller.tfile.LogAggregationTFileController;

/** Hadoop's readers of aggregated logs, one command per run; most print one JSON line. */
public class AggregatedLogProbe {
  public static void main(String[] args) throws Exception {
    Configuration conf = new Configuration();
    switch (args[0]) {
      case "read": read(conf, args[1]); break;
      case "dump": dump(conf, args[1]); break;
      case "vlong": vlong(args); break;
      case "utf": utf(args); break;
      case "path": path(conf, args); break;
      default: throw new IllegalArgumentException("unknown command " + args[0]);
    }
  }

  static Path local(String file) {
    return new Path(new File(file).getAbsoluteFile().toURI());
  }

  /** TFile's view (entries, sorted, comparator), then every record as LogReader gives it:
   *  owner, ACLs, and each container's files with name, declared length, bytes read, SHA-256. */
  static void read(Configuration conf, String file) throws Exception {
    Path path = local(file);
    StringBuilder out = new StringBuilder("{");
    FileSystem fs = path.getFileSystem(conf);
    long length = fs.getFileStatus(path).getLen();
    try (FSDataInputStream in = fs.open(path); TFile.Reader tfile = new TFile.Reader(in, length, conf)) {
      out.append("\"entries\":").append(tfile.getEntryCount());
      out.append(",\"sorted\":").append(tfile.isSorted());
      out.append(",\"comparator\":").append(json(tfile.getComparatorName()));
    }
    LogReader reader = new LogReader(conf, path);
    try {
      out.append(",\"owner\":").append(json(reader.getApplicationOwner()));
      out.append(",\"acls\":{");
      String sep = "";
      for (Map.Entry<ApplicationAccessType, String> e : new TreeMap<>(reader.getApplicationAcls()).entrySet()) {
        out.append(sep).append(json(e.getKey().name())).append(":").append(json(e.getValue()));
        sep = ",";
      }
      out.append("},\"containers\":[");
      LogKey key = new LogKey();
      DataInputStream value = reader.next(key);
      sep = "";
      while (value != null) {
        out.append(sep).append("{\"id\":").append(json(key.toString())).append(",\"files\":[");
        sep = ",";
        String fileSep = "";
        while (true) {
          String name;
          try {
            name = value.readUTF();
          } catch (EOFException end) {
            break;  // how Hadoop's readers find the end of a container's files
          }
          String declared = value.readUTF();
          long remaining = Long.parseLong(declared);
          MessageDigest sha = MessageDigest.getInstance("SHA-256");
          byte[] buf = new byte[65536];
          long read = 0;
          while (remaining > 0) {
            int n = value.read(buf, 0, (int) Math.min(buf.length, remaining));
            if (n < 0) break;
            sha.update(buf, 0, n);
            remaining -= n;
            read += n;
          }
          out.append(fileSep).append("{\"name\":").append(json(name)).append(",\"length\":").append(json(declared))
              .append(",\"read\":").append(read).append(",\"sha256\":\"").append(hex(sha.digest())).append("\"}");
          fileSep = ",";
        }
        out.append("]}");
        key = new LogKey();
        value = reader.next(key);
      }
      out.append("]}");
    } finally {
      reader.close();
    }
    System.out.println(out);
  }

  /** LogReader.readAcontainerLogs of every container, as text. */
  static void dump(Configuration conf, String file) throws Exception {
    LogReader reader = new LogReader(conf, local(file));
    try {
      LogKey key = new LogKey();
      DataInputStream value = reader.next(key);
      while (value != null) {
        StringWriter text = new StringWriter();
        LogReader.readAcontainerLogs(value, text);
        System.out.print("Container: " + key + "\n" + text);
        key = new LogKey();
        value = reader.next(key);
      }
    } finally {
      reader.close();
    }
  }

  /** TFile's Utils.writeVLong of each decimal argument, in hex. */
  static void vlong(String[] args) throws Exception {
    StringBuilder out = new StringBuilder("{");
    for (int i = 1; i < args.length; i++) {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream();
      Utils.writeVLong(new DataOutputStream(bytes), Long.parseLong(args[i]));
      out.append(i > 1 ? "," : "").append(json(args[i])).append(":\"").append(hex(bytes.toByteArray())).append("\"");
    }
    System.out.println(out.append("}"));
  }

  /** DataOutputStream.writeUTF of each argument, given as the hex of its UTF-16BE units. */
  static void utf(String[] args) throws Exception {
    StringBuilder out = new StringBuilder("{");
    for (int i = 1; i < args.length; i++) {
      byte[] units = unhex(args[i]);
      char[] chars = new char[units.length / 2];  // char by char: a decoder would replace lone surrogates
      for (int c = 0; c < chars.length; c++) chars[c] = (char) ((units[2 * c] & 0xff) << 8 | (units[2 * c + 1] & 0xff));
      String text = new String(chars);
      ByteArrayOutputStream bytes = new ByteArrayOutputStream();
      new DataOutputStream(bytes).writeUTF(text);
      out.append(i > 1 ? "," : "").append(json(args[i])).append(":\"").append(hex(bytes.toByteArray())).append("\"");
    }
    System.out.println(out.append("}"));
  }

  /** The TFile controller's remote root and suffix, and LogAggregationUtils' file for
   *  (root, user, app, node); an empty root keeps yarn.nodemanager.remote-app-log-dir's default. */
  static void path(Configuration conf, String[] args) throws Exception {
    if (!args[1].isEmpty()) {
      conf.set("yarn.nodemanager.remote-app-log-dir", args[1]);
    }
    LogAggregationTFileController controller = new LogAggregationTFileController();
    controller.initialize(conf, "TFile");
    Path file = LogAggregationUtils.getRemoteNodeLogFileForApp(controller.getRemoteRootLogDir(),
        ApplicationId.fromString(args[3]), args[2], NodeId.fromString(args[4]),
        controller.getRemoteRootLogDirSuffix());
    System.out.println("{\"root\":" + json(controller.getRemoteRootLogDir().toString())
        + ",\"suffix\":" + json(controller.getRemoteRootLogDirSuffix())
        + ",\"file\":" + json(file.toString()) + "}");
  }


  static String json(String s) {
    if (s == null) return "null";
    StringBuilder b = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }

  static String hex(byte[] bytes) {
    StringBuilder b = new StringBuilder();
    for (byte x : bytes) b.append(String.format("%02x", x & 0xff));
    return b.toString();
  }

  static byte[] unhex(String s) {
    byte[] out = new byte[s.length() / 2];
    for (int i = 0; i < out.length; i++) out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
    return out;
  }
}
"""


@pytest.fixture(scope="module")
def probe_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe, compiled once for this module."""
    src = tmp_path_factory.mktemp("aggregated-log-probe-src")
    out = tmp_path_factory.mktemp("aggregated-log-probe-classes")
    sources = [src / "AggregatedLogProbe.java"]
    sources[0].write_text(PROBE)
    javac = java_home() / "bin" / "javac"
    result = subprocess.run(
        [str(javac), "-nowarn", "-d", str(out), "-cp", classpath(shaded_jettison()), *map(str, sources)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"javac failed:\n{result.stderr}"
    return out


def probe(classes: Path, *args: str, conf_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = run_driver(
        "AggregatedLogProbe",
        list(args),
        classes=classes,
        conf_dir=conf_dir,
        extra_jars=(shaded_jettison(),),
        timeout=120,
        jvm_options=quiet_jvm_options(),
    )
    assert result.returncode == 0, f"probe {args[0]} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def probe_json(classes: Path, *args: str) -> dict[str, Any]:
    result = probe(classes, *args)
    payload = parse_json_line(result.stdout)
    assert payload is not None, f"probe {args[0]} printed no JSON line:\n{result.stdout}\n{result.stderr}"
    return payload


def big_log(size: int) -> bytes:
    """A deterministic log of ``size`` bytes: numbered lines."""
    lines = b"".join(b"%09d INFO executor: step %d of the job\n" % (i, i) for i in range(size // 30 + 1))
    return lines[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hadoop_log_reader_reads_every_container(probe_classes: Path, tmp_path: Path) -> None:
    """Hadoop's TFile.Reader and LogReader open our file: an unsorted TFile with one entry
    per record; owner and ACLs as written; every container (a 5 MiB log, an empty file,
    names beyond ASCII, a container id with an epoch) with its files in order, each read to
    its declared length with the same bytes, and the container without files absent."""
    large = big_log(5 * 1024 * 1024 + 3)
    odd_name = "prelaunch-\u00e9\u2603\U0001f600.out"
    containers: list[tuple[str, list[ContainerLogFile]]] = [
        (
            C1,
            [ContainerLogFile.from_bytes("stdout", b"hello from the AM\n"), ContainerLogFile.from_bytes("stderr", b"")],
        ),
        (
            C2,
            [
                ContainerLogFile("syslog", len(large), io.BytesIO(large)),
                ContainerLogFile.from_bytes(odd_name, b"\x00\xff"),
            ],
        ),
        ("container_1700000000000_0007_01_000004", []),
        (C3, [ContainerLogFile.from_bytes("stdout", "d\u00e9j\u00e0 vu\n".encode())]),
    ]
    log_file = tmp_path / "node-1.example_8041"
    with log_file.open("wb") as f:
        write_aggregated_logs(f, "alice", {"VIEW_APP": "bob admins", "MODIFY_APP": "alice"}, containers)

    seen = probe_json(probe_classes, "read", str(log_file))

    expected_containers = [
        {
            "id": cid,
            "files": [
                {
                    "name": f.name,
                    "length": str(f.length),
                    "read": f.length,
                    "sha256": sha256(f.source if isinstance(f.source, bytes) else large),
                }
                for f in files
            ],
        }
        for cid, files in containers
        if files
    ]
    assert seen == {
        "entries": 6,
        "sorted": False,
        "comparator": "",
        "owner": "alice",
        "acls": {"MODIFY_APP": "alice", "VIEW_APP": "bob admins"},
        "containers": expected_containers,
    }


def test_read_a_container_logs_prints_each_log_type(probe_classes: Path, tmp_path: Path) -> None:
    """LogReader.readAcontainerLogs, the text `yarn logs` grew from, prints LogType,
    LogLength and the contents of each file of each container; no ACLs is fine."""
    log_file = tmp_path / "node"
    with log_file.open("wb") as f:
        write_aggregated_logs(
            f,
            "bob",
            None,
            [
                (
                    C1,
                    [
                        ContainerLogFile.from_bytes("stdout", b"line one\nline two\n"),
                        ContainerLogFile.from_bytes("stderr", b""),
                    ],
                ),
                (C2, [ContainerLogFile.from_bytes("stdout", b"executor done\n")]),
            ],
        )
    text = probe(probe_classes, "dump", str(log_file)).stdout
    assert text == (
        f"Container: {C1}\n"
        "LogType:stdout\nLogLength:18\nLog Contents:\nline one\nline two\n\nEnd of LogType:stdout\n\n"
        "LogType:stderr\nLogLength:0\nLog Contents:\n\nEnd of LogType:stderr\n\n"
        f"Container: {C2}\n"
        "LogType:stdout\nLogLength:14\nLog Contents:\nexecutor done\n\nEnd of LogType:stdout\n\n"
    )


def test_vlong_and_writeutf_match_hadoop(probe_classes: Path) -> None:
    """Our VLong equals TFile's Utils.writeVLong at every form's boundaries, and our
    writeUTF equals Java's for NUL, accents, symbols, supplementary and lone surrogates."""
    numbers = [0, -1, 127, 128, -32, -33, 5119, 5120, -5120, -5121, 1048575, 1048576, -1048576, -1048577]
    numbers += [(8 << 24) - 1, 8 << 24, -(8 << 24), -(8 << 24) - 1, 2**31 - 1, 2**31, -(2**31) - 1]
    numbers += [2**39, 2**47 - 1, 2**55, 2**63 - 1, -(2**63), 5 * 1024 * 1024]
    java = probe_json(probe_classes, "vlong", *map(str, numbers))
    assert java == {str(n): encode_vlong(n).hex() for n in numbers}

    texts = ["", "stdout", "\x00", "a\x00b", "\u00e9", "\u07ff", "\u0800", "\u20ac", "\uffff", "\U0001f600", "\ud800"]
    units = {t.encode("utf-16-be", "surrogatepass").hex(): t for t in texts}
    java = probe_json(probe_classes, "utf", *units)
    assert java == {hex_units: encode_java_utf(t).hex() for hex_units, t in units.items()}


@pytest.mark.parametrize(
    ("root", "user", "app", "node"),
    [
        ("", "alice", "application_1700000000000_0007", "node-1.example:8041"),
        ("/var/app-logs", "bob", "application_1700000000000_12345", "10.0.0.5:45454"),
        ("/data/logs", "carol", "application_1700000000000_20000", "h:1"),
    ],
)
def test_remote_path_is_where_the_tfile_controller_looks(
    probe_classes: Path, root: str, user: str, app: str, node: str
) -> None:
    """Hadoop's TFile controller (suffix logs-tfile) and LogAggregationUtils name the same
    file as remote_log_path, with /tmp/logs as the default root."""
    java = probe_json(probe_classes, "path", root, user, app, node)
    assert java["suffix"] == "logs-tfile"
    assert java["root"] == (root or "/tmp/logs")
    assert java["file"] == remote_log_path(root or "/tmp/logs", user, app, node)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def write_site_xml(path: Path, properties: dict[str, str]) -> None:
    entries = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in properties.items()
    )
    path.write_text(f'<?xml version="1.0"?>\n<configuration>\n{entries}</configuration>\n')


@pytest.fixture
def logs_conf(tmp_path: Path, refused_port: int) -> tuple[Path, Path]:
    """A conf dir for `yarn logs` on the local file system: aggregated logs under
    ``tmp_path/remote-logs``, and an RM that refuses connections within ~2 s."""
    root = tmp_path / "remote-logs"
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    write_site_xml(
        conf_dir / "yarn-site.xml",
        {
            "yarn.nodemanager.remote-app-log-dir": str(root),
            "yarn.resourcemanager.address": f"127.0.0.1:{refused_port}",
            "yarn.resourcemanager.connect.max-wait.ms": "2000",
            "yarn.resourcemanager.connect.retry-interval.ms": "500",
        },
    )
    write_site_xml(conf_dir / "core-site.xml", {"fs.defaultFS": "file:///", "ipc.client.connect.max.retries": "0"})
    return conf_dir, root


def test_yarn_logs_prints_aggregated_logs_without_an_rm(probe_classes: Path, logs_conf: tuple[Path, Path]) -> None:
    """`yarn logs -applicationId` finds no RM, falls back to the file system, finds our
    file where remote_log_path put it (guessing the owner from the directories), and prints
    every container's logs; with -appOwner, -containerId and -log_files it prints just one."""
    conf_dir, root = logs_conf
    path = Path(remote_log_path(str(root), "alice", APP, NODE))
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        write_aggregated_logs(
            f,
            "alice",
            {"VIEW_APP": "alice"},
            [
                (
                    C1,
                    [
                        ContainerLogFile.from_bytes("stderr", b"am warning\n"),
                        ContainerLogFile.from_bytes("stdout", b"am says hello\n"),
                    ],
                ),
                (C2, [ContainerLogFile.from_bytes("stdout", b"executor says hi\n")]),
            ],
        )

    everything = yarn_logs(conf_dir, "-applicationId", APP)
    assert everything.returncode == 0, everything.stderr
    assert "Attempting to fetch logs directly from the filesystem" in everything.stderr
    out = everything.stdout
    for container, log_type, length, content in [
        (C1, "stderr", 11, "am warning\n"),
        (C1, "stdout", 14, "am says hello\n"),
        (C2, "stdout", 17, "executor says hi\n"),
    ]:
        section = f"Container: {container} on node-1.example_8041\nLogAggregationType: AGGREGATED\n"
        assert section in out
        start = out.index(section)
        body = out[start:]
        assert f"LogType:{log_type}\n" in body and f"LogLength:{length}\n" in body
        assert f"LogContents:\n{content}\nEnd of LogType:{log_type}" in body

    one = yarn_logs(
        conf_dir,
        "-applicationId",
        APP,
        "-appOwner",
        "alice",
        "-containerId",
        C2,
        "-log_files",
        "stdout",
    ).stdout
    assert f"Container: {C2} on node-1.example_8041" in one
    assert "LogContents:\nexecutor says hi\n\nEnd of LogType:stdout" in one
    assert C1 not in one and "am says hello" not in one
