"""The LXC configuration of one container: what it gets, written before ``lxc-execute`` starts it.

What the container gets (``render_config``):

* namespaces: mount, pid, ipc, uts (the hostname stays the host's, so Java and
  Spark resolve it as they would on the host) and cgroup.  **Not network**:
  ``lxc.net.0.type = none`` keeps the host's network namespace, so executors
  listen on the host's addresses as YARN expects (a spec with ``own_network``, a
  function's sandbox, gets a namespace of its own with only loopback instead);
* a root file system that is a per-container empty read-only directory with
  mount points, dressed as the **runtime image** (``spec.root_image``, an
  ``ImageCache`` root shared by every container, which nothing here writes to):
  the image's ``/usr`` and ``/etc`` bind-mounted read-only, its top-level
  symlinks (``bin -> usr/bin``, ``lib -> usr/lib``...) copied, and a top-level
  real ``/lib``-like dir of the image (``IMAGE_TOP_NAMES``) bound read-only.
  Nothing of the host's ``/usr``, ``/etc`` or ``/lib`` is mounted;
* the host's ``/etc/hosts`` and ``/etc/resolv.conf`` (``HOST_NETWORK_FILES``),
  bound read-only over the image's placeholders: the container shares the
  host's network and hostname, so name lookups (Java's
  ``InetAddress.getLocalHost``, DNS) must answer as on the host.  These two
  files are the only host files a container sees besides the dirs its spec
  names;
* ``/proc`` (its ``sys`` read-only), ``/sys`` and the container's own cgroups
  read-only, a minimal ``/dev`` (``lxc.autodev``) with a private ``/dev/shm``,
  and a private ``/tmp``; the spec's read-only dirs read-only; ``work_dir``,
  ``log_dir`` and the writable dirs read-write, each at the same path as on the
  host (their mount points are made in the container's own root, or in its
  private ``/tmp``, never in the image);
* cgroup v1 limits in ``cortex/<id>`` of every hierarchy: ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` when the kernel accounts swap, so swap
  cannot stretch the limit), ``pids.max`` (init and the wrapper count: 2 tasks),
  and a whitelist of the ``/dev`` nodes above;
* a user namespace (``lxc.idmap``): root inside is the first id of its
  application's block of host ids (``id_ranges.py``), an unprivileged user
  outside; host files owned by ids outside the block (root's among them) are
  ``nobody`` inside and only their "other" permissions apply.  Because the
  container shares the host's network namespace, which its user namespace does
  not own, the kernel refuses it a fresh sysfs: ``/sys`` is a sysfs the runtime
  mounted on the host (``lxc_sandbox.mount_sysfs``), bound read-only.  Not the
  host's ``/sys`` itself: it carries the host's cgroup mounts, which the kernel
  will not let a user namespace unmount and which the container's ``/proc/self/
  mountinfo`` would list next to its own cgroup mounts; the JVM reads its cgroup
  paths from there and dies on the host's (``ManagementFactory``, Spark's driver);
* root inside, with the capabilities cut to ``KEPT_CAPABILITIES`` (no sys_admin,
  so no remounting; no net_admin or net_raw on the host's network; no mknod,
  sys_ptrace, dac_read_search, sys_module...), ``no_new_privs``, and the seccomp
  profile of ``seccomp.py``.

Every mount source is opened by the container's root, so each directory on the
way to it must be searchable by "other" (``check_reachable``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from cortex_rm.container.id_ranges import IdBlock
from cortex_rm.container.runtime import ContainerSpec, ContainerStartError
from cortex_rm.container.seccomp import render_profile

#: lxc-execute's fd that carries LXC's log to the runtime; the wrapper closes it.
LXC_LOG_FD: Final = 3
#: Runs lxc-execute with a parent-death signal (util-linux).
SETPRIV: Final = "/usr/bin/setpriv"
#: The cgroup under which every container's cgroups are made, in every hierarchy.
CGROUP_PARENT: Final = "cortex"
#: Host files bound read-only over the image's copies: the container shares the host's
#: network namespace and hostname, so its name lookups must read the host's answers.
HOST_NETWORK_FILES: Final = ("/etc/hosts", "/etc/resolv.conf")
#: Capabilities root keeps inside a container (Docker's default set less mknod, net_raw,
#: net_bind_service and setfcap); every other one is dropped from the bounding set.
KEPT_CAPABILITIES: Final = (
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "sys_chroot",
    "audit_write",
)
#: The device nodes a container may use: null, zero, full, random, urandom, tty.
ALLOWED_DEVICES: Final = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm")
#: Top-level names of the image copied into the container: symlinks into /usr on a
#: merged-/usr image (Debian 12), read-only binds where the image has a real directory.
IMAGE_TOP_NAMES: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Container paths that the runtime mounts itself; a spec may not put a directory there.
_RESERVED: Final = (PurePosixPath("/proc"), PurePosixPath("/sys"), PurePosixPath("/dev"))
#: Container paths that are the image's: a host dir there would be hidden by (or land in) the image.
_IMAGE_DIRS: Final = tuple(PurePosixPath("/", name) for name in ("usr", "etc", *IMAGE_TOP_NAMES))

#: Run as pid 2 by init: close the log pipe, shrug off the signals that ``signal``
#: and ``kill`` deliver to every process (a handler, not SIG_IGN, so the command
#: does not inherit it), run the command, then SIGKILL what is left and exit with
#: the command's status (128+signal when a signal ended it).
WRAPPER_SCRIPT: Final = (
    f"exec {LXC_LOG_FD}>&-; trap : HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM; "
    '"$@"; code=$?; kill -KILL -1 2>/dev/null; exit $code'
)
#: The wrapper of a NodeManager with recovery: the same, and it writes the command's exit code
#: into the work dir (its cwd; ``nm_recovery.EXIT_CODE_FILE``, named by its first argument) before
#: the container ends, for a NodeManager that was down then to report it.
RECORDING_WRAPPER_SCRIPT: Final = (
    f"exec {LXC_LOG_FD}>&-; trap : HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM; "
    'f=$1; shift; "$@"; code=$?; echo $code > "$f"; kill -KILL -1 2>/dev/null; exit $code'
)
#: lxc-execute of a NodeManager with recovery outlives the daemon, and the pipe of its log: it
#: runs with SIGPIPE ignored (inherited through exec), so a log line it writes then is dropped.
NO_SIGPIPE: Final = ("/bin/sh", "-c", "trap '' PIPE; exec \"$@\"", "cortex-lxc-execute")

#: The stop hook: copies the memory cgroup's figures before LXC removes the cgroup.
#: LXC appends its own arguments after the two of the config line.  Builtins only,
#: so it costs one ``sh`` when a container ends; the runtime reads the file after
#: lxc-execute has exited.
SNAPSHOT_HOOK: Final = """#!/bin/sh
# lxc.hook.stop of Cortex containers: LXC runs it on the host once the
# container's processes are gone and before it removes the container's cgroups.
# Usage: cgroup-snapshot MEMORY_CGROUP_DIR OUT_FILE [LXC's arguments...]
d=$1
out=$2
{
  for f in memory.oom_control memory.failcnt memory.max_usage_in_bytes memory.limit_in_bytes; do
    if [ -r "$d/$f" ]; then
      while read -r line; do echo "$f $line"; done < "$d/$f"
    fi
  done
} > "$out" 2>/dev/null
exit 0
"""

SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,:@+=/-]*")


@dataclass(frozen=True)
class ImageLayout:
    """What a container's root file system takes from its runtime image, with the host facts
    its config needs (looked up once per image root)."""

    #: The unpacked image (``<node cache>/roots/<sha256>``), shared by every container: read only.
    root_image: Path
    #: Top-level names that are symlinks in the image, with their targets (``bin -> usr/bin``).
    root_links: tuple[tuple[str, str], ...]
    #: Top-level names that are real directories in the image and get read-only binds.
    root_dirs: tuple[str, ...]
    #: Host files bound read-only over the image's copies (those of ``HOST_NETWORK_FILES``
    #: that the host has and the image has as a regular file to mount over).
    host_files: tuple[str, ...]
    #: The kernel accounts swap in the memory cgroup (``memory.memsw.*`` exists).
    swap_accounting: bool
    hostname: str

    @classmethod
    def of_image(
        cls, root_image: Path, cgroup_root: Path, hostname: str, host_files: tuple[str, ...] = HOST_NETWORK_FILES
    ) -> ImageLayout:
        """Look at the image root and this host: a handful of ``lstat`` calls."""
        links, dirs = [], []
        for name in IMAGE_TOP_NAMES:
            path = root_image / name
            if path.is_symlink():
                links.append((name, os.readlink(path)))
            elif path.is_dir():
                dirs.append(name)
        # The image's copy must be a plain file: a mount target inside the image is never made
        # (the image is shared and read-only) nor followed through a symlink.
        bound = []
        for host_file in host_files:
            copy = root_image / host_file.lstrip("/")
            if Path(host_file).is_file() and copy.is_file() and not copy.is_symlink():
                bound.append(host_file)
        swap = (cgroup_root / "memory" / "memory.memsw.limit_in_bytes").exists()
        return cls(root_image, tuple(links), tuple(dirs), tuple(bound), swap, hostname)


class ImageLayouts:
    """``ImageLayout`` per image root, looked up on its first start; the last ``kept`` are remembered
    (a node runs one image at a time, two while it changes)."""

    def __init__(self, cgroup_root: Path, hostname: str, kept: int = 4) -> None:
        self.cgroup_root, self.hostname, self.kept = cgroup_root, hostname, kept
        self._layouts: dict[Path, ImageLayout] = {}  # oldest first

    def of(self, root_image: Path) -> ImageLayout:
        found = self._layouts.get(root_image)
        if found is None:
            found = self._layouts[root_image] = ImageLayout.of_image(root_image, self.cgroup_root, self.hostname)
            while len(self._layouts) > self.kept:
                del self._layouts[next(iter(self._layouts))]
        return found


def check_image_root(spec: ContainerSpec) -> Path:
    """The runtime image root ``spec`` runs in; raises ``ContainerStartError`` saying what to do
    when there is none, or it is not an unpacked image (a directory with real ``usr/`` and ``etc/``)."""
    root = spec.root_image
    if root is None:
        raise ContainerStartError(
            f"{spec.container_id}: the cluster names no runtime image: build one with `cortex-rm image build`, "
            "upload it with `cortex-rm image push` and name it in [resourcemanager] runtime_image"
        )
    text = str(root)
    if not SAFE_PATH.fullmatch(text) or os.path.normpath(text) != text or text == "/":
        raise ContainerStartError(
            f"{spec.container_id}: runtime image root {text!r} must be a normalised absolute path of "
            "letters, digits and _.,:@+=- (an LXC mount entry carries no others)"
        )
    # usr and etc are mount sources on the host: a symlink there would bind whatever it points to.
    for name in ("usr", "etc"):
        if not (root / name).is_dir() or (root / name).is_symlink():
            raise ContainerStartError(
                f"{spec.container_id}: runtime image root {text} is not an unpacked image (an existing "
                f"directory with real usr/ and etc/ directories in it; {name}/ is missing or a symlink): "
                "was it removed from the node's image cache?"
            )
    return root


@dataclass(frozen=True)
class Binds:
    """The spec's own directories, checked and in mount order (parents before children)."""

    writable: tuple[PurePosixPath, ...]
    readonly: tuple[PurePosixPath, ...]

    def in_mount_order(self) -> list[tuple[PurePosixPath, bool]]:
        """(path, writable) pairs, shallow paths first so that a nested bind lands on its parent's."""
        both = [(p, True) for p in self.writable] + [(p, False) for p in self.readonly]
        return sorted(both, key=lambda e: (len(e[0].parts), str(e[0])))


def check_spec_paths(spec: ContainerSpec) -> Binds:
    """The directories to bind for ``spec``; raises ``ContainerStartError`` naming a bad one.

    Each must be an existing directory on the host, given without symlinks (it is
    mounted at the same path inside) and in characters that an ``lxc.mount.entry``
    carries as they are; none may be under /proc, /sys or /dev, nor under /usr,
    /etc or the image's other top-level names (``IMAGE_TOP_NAMES``): inside, those
    are the runtime image's, which would hide a read-only dir and cannot take a
    writable one (and no mount point is ever made in the shared image).
    """
    writable = list(dict.fromkeys([spec.work_dir, spec.log_dir, *spec.writable_dirs]))
    readonly = [p for p in dict.fromkeys(spec.readonly_dirs) if p not in writable]
    for what, path in spec.paths():
        text = str(path)
        if not SAFE_PATH.fullmatch(text) or os.path.normpath(text) != text or text == "/":
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text!r} must be a normalised absolute path of "
                "letters, digits and _.,:@+=- (an LXC mount entry carries no others)"
            )
        pure = PurePosixPath(text)
        if any(pure == r or r in pure.parents for r in _RESERVED):
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is under /proc, /sys or /dev")
        image_dir = next((r for r in _IMAGE_DIRS if pure == r or r in pure.parents), None)
        if image_dir is not None:
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text} is under {image_dir}, which inside the container is the "
                f"runtime image's (read-only; the host's {image_dir} is not there): give a directory elsewhere"
            )
        if not path.is_dir():
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is not an existing directory")
        if path.resolve() != path:
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text} goes through a symlink (to {path.resolve()}); give the real path"
            )
    return Binds(tuple(PurePosixPath(p) for p in writable), tuple(PurePosixPath(p) for p in readonly))


def _entry(source: str, target: PurePosixPath | str, fstype: str, options: str) -> str:
    relative = str(target).lstrip("/")
    return f"lxc.mount.entry = {source} {relative} {fstype} {options} 0 0"


def render_config(
    *,
    spec: ContainerSpec,
    binds: Binds,
    image: ImageLayout,
    rootfs: Path,
    snapshot_hook: Path,
    snapshot_file: Path,
    cgroup_root: Path,
    ids: IdBlock,
    seccomp_profile: Path,
    cgroup_dir: str,
    sysfs: Path,
) -> str:
    """The LXC config of one container (see the module docstring for what each part is for);
    ``cgroup_dir``: its cgroup below each hierarchy's root (``cortex/<block>/<id>``); ``sysfs``:
    what is bound at its ``/sys`` (a sysfs with nothing mounted below it)."""
    cid = spec.container_id
    tmpfs = f"rw,nosuid,nodev,mode=1777,size={spec.memory_limit_bytes}"
    lines = [
        f"# Cortex RM container {cid}: written by LxcRuntime, removed when the container ends",
        f"lxc.uts.name = {image.hostname}",
        f"lxc.rootfs.path = dir:{rootfs}",
        "lxc.rootfs.options = ro",
        *(
            ["# a network namespace of its own, with only a loopback device: no network", "lxc.net.0.type = empty"]
            if spec.own_network
            else ["# the host's network namespace, under the node's network policy", "lxc.net.0.type = none"]
        ),
        "lxc.console.path = none",
        "lxc.tty.max = 0",
        "lxc.autodev = 1",
        "# unprivileged: the container's ids 0..65535 are its application's block of host ids",
        *ids.idmap_lines(),
        "lxc.mount.auto = proc:mixed cgroup:ro",
        _entry(str(sysfs), "sys", "none", "bind,ro"),
        f"# the runtime image {image.root_image}, read-only",
        _entry(f"{image.root_image}/usr", "usr", "none", "ro,bind"),
        _entry(f"{image.root_image}/etc", "etc", "none", "ro,bind"),
        *(_entry(f"{image.root_image}/{name}", name, "none", "ro,bind") for name in image.root_dirs),
        "# the host's name lookups (the container shares its network and hostname)",
        *(_entry(path, path, "none", "ro,bind") for path in image.host_files),
        _entry("tmpfs", "tmp", "tmpfs", tmpfs),
        _entry("tmpfs", "dev/shm", "tmpfs", tmpfs + ",create=dir"),
        *(
            _entry(str(path), path, "none", ("rw" if writable else "ro") + ",bind,create=dir")
            for path, writable in binds.in_mount_order()
        ),
        f"lxc.cgroup.dir.container = {cgroup_dir}",
        f"lxc.cgroup.dir.monitor = {cgroup_dir}.monitor",
        f"lxc.cgroup.memory.limit_in_bytes = {spec.memory_limit_bytes}",
        *([f"lxc.cgroup.memory.memsw.limit_in_bytes = {spec.memory_limit_bytes}"] if image.swap_accounting else []),
        f"lxc.cgroup.pids.max = {spec.pids_limit}",
        "lxc.cgroup.devices.deny = a",
        *(f"lxc.cgroup.devices.allow = {d}" for d in ALLOWED_DEVICES),
        f"lxc.cap.keep = {' '.join(KEPT_CAPABILITIES)}",
        "lxc.no_new_privs = 1",
        f"lxc.seccomp.profile = {seccomp_profile}",
        f"lxc.hook.stop = {snapshot_hook} {cgroup_root / 'memory' / cgroup_dir} {snapshot_file}",
    ]
    return "\n".join(lines) + "\n"


def prepare_rootfs(rootfs: Path, binds: Binds, image: ImageLayout) -> None:
    """Make the container's empty root: mount points and the image's top-level symlinks.

    Bind targets below /tmp are made by LXC in the private /tmp (``create=dir``);
    every other one is made here, in this container's own tree, which holds no
    symlink but the top-level ones it never descends (``check_spec_paths`` keeps
    the spec's dirs out of /usr, /etc and those names, so none lands in the image).
    """
    for name in ("usr", "etc", "proc", "sys", "dev", "tmp", "root", *image.root_dirs):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    rootfs.chmod(0o755)
    for name, target in image.root_links:
        (rootfs / name).symlink_to(target)
    for path, _ in binds.in_mount_order():
        if path.parts[1] != "tmp":
            (rootfs / str(path).lstrip("/")).mkdir(parents=True, exist_ok=True)


def launch_argv(
    spec: ContainerSpec, lxc_execute: str, config: Path, lxcpath: Path, exit_code_file: str | None = None
) -> list[str]:
    """The argv that runs lxc-execute: ``setpriv --pdeathsig KILL`` (lxc-execute dies with the thread
    that spawned it, and the container with lxc-execute: ``lxc_leftovers.py``), then lxc-execute's
    own: the container, LXC's log on fd 3, then the wrapper, env and the command.

    With ``exit_code_file`` (a NodeManager with recovery) there is no parent-death signal: the
    container outlives the daemon, and its wrapper writes the command's exit code to that file
    (relative to the work dir)."""
    env = [f"{k}={v}" for k, v in spec.env.items()]
    head = [SETPRIV, "--pdeathsig", "KILL", "--"] if exit_code_file is None else list(NO_SIGPIPE)
    wrapper = [WRAPPER_SCRIPT, "cortex-container"] if exit_code_file is None else [
        RECORDING_WRAPPER_SCRIPT, "cortex-container", exit_code_file
    ]  # fmt: skip
    return [
        *head,
        lxc_execute,
        "-n",
        spec.container_id,
        "-P",
        str(lxcpath),
        "-f",
        str(config),
        "-o",
        f"/proc/self/fd/{LXC_LOG_FD}",
        "-l",
        "NOTICE",
        "--",
        "/usr/bin/env",
        "-i",
        "-C",
        str(spec.work_dir),
        "/bin/sh",
        "-c",
        *wrapper,
        "/usr/bin/env",
        "-i",
        *env,
        *spec.command,
    ]


def check_reachable(container_id: str, paths: list[Path]) -> None:
    """ContainerStartError naming the first directory on the way to one of ``paths`` that "other"
    cannot search: the container's root (an unprivileged host uid) opens every mount source."""
    seen: set[Path] = set()
    for path in paths:
        for directory in [*reversed(path.parents), path]:
            if directory in seen:
                continue
            seen.add(directory)
            try:
                mode = directory.stat().st_mode
            except OSError as e:
                raise ContainerStartError(f"{container_id}: cannot look at {directory}: {e}") from e
            if not mode & 0o001:
                raise ContainerStartError(
                    f"{container_id}: {directory} is not searchable by other users (mode {mode & 0o7777:o}), so the "
                    f"container's unprivileged root cannot reach {path}: run `chmod o+x {directory}` or move the "
                    "NodeManager's dirs"
                )


def prepare_host(lxc_execute: str, cgroup_root: Path, base_dir: Path) -> None:
    """Check what the host must give (root, lxc-execute, cgroup v1 memory and pids, a base dir
    an LXC config line can carry) and write the stop hook into ``base_dir``; ContainerStartError
    saying what to do otherwise."""
    if os.geteuid() != 0:
        raise ContainerStartError("LxcRuntime runs containers as root for now; this process is not root")
    if not os.access(lxc_execute, os.X_OK):
        raise ContainerStartError(f"{lxc_execute} is missing: install Debian's lxc (scripts/install does)")
    if not os.access(SETPRIV, os.X_OK):
        raise ContainerStartError(f"{SETPRIV} is missing: install util-linux")
    for controller in ("memory", "pids"):
        if not (cgroup_root / controller / "cgroup.procs").exists():
            raise ContainerStartError(f"no cgroup v1 {controller} controller at {cgroup_root / controller}")
    if not SAFE_PATH.fullmatch(str(base_dir)):
        raise ContainerStartError(f"base dir {str(base_dir)!r} must be an absolute path of letters, digits and _.,:@+=-")
    base_dir.mkdir(parents=True, exist_ok=True)
    base_dir.chmod(base_dir.stat().st_mode | 0o011)  # the containers' roots are under it (see check_reachable)
    (base_dir / "seccomp").write_text(render_profile())
    hook = base_dir / "cgroup-snapshot"
    hook.write_text(SNAPSHOT_HOOK)  # run by LXC on the host, as root
    hook.chmod(0o755)
