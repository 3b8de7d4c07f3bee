"""``cortex-rm contributor install`` and ``uninstall``: a contributed machine as a systemd service.

Install writes three files under ``root`` (``/`` unless ``--root DIR``, for tests and packagers):
the node's config (``/etc/cortex-rm/cortex.toml``), its unit (``/etc/systemd/system/cortex-rm.service``)
and a manifest (``/etc/cortex-rm/install.json``) naming those files and the directories install
made.  It checks the config as the daemon will before writing anything, and reads it back with
``load_config`` after.  When systemd runs this machine and no ``--root`` is given it reloads
systemd and enables and starts the service; otherwise it prints the command that would.

The containers' host ids: the config gets a ``container_id_range`` that meets no entry of the
root's /etc/subuid and /etc/subgid, the same check the NodeManager makes at start (it refuses a
range listed there), so those files are read, never written.

Uninstall stops and disables the service (systemd, no ``--root``), removes the files the manifest
names and the directories install made (if empty), and keeps the state dir (the node's identity):
it says how to remove that.  The texts are built in ``contributor_files.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from cortex_rm.config import ConfigError, load_config
from cortex_rm.contributor_files import (
    CONFIG_PATH, MANIFEST_PATH, STATE_DIR, UNIT_NAME, UNIT_PATH, ContributorError, Manifest, NodeOffer,
    config_text, free_id_range, unit_text,
)  # fmt: skip
from cortex_rm.yarn.addresses import HostPort

Say = Callable[[str], None]
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(3): systemd is this machine's init


def under(root: Path, path: PurePosixPath) -> Path:
    """``path`` (absolute, on the target system) inside ``root``."""
    return root / path.relative_to("/")


def entry_point_argv(config: PurePosixPath = CONFIG_PATH) -> list[str]:
    """The command that runs this installation's daemon: its ``cortex-rm`` script in the scripts
    dir of the interpreter running now (a venv's bin/, or where pip put it), else that interpreter
    with ``-m cortex_rm``."""
    script = Path(sysconfig.get_path("scripts")) / "cortex-rm"
    if script.is_file() and os.access(script, os.X_OK):
        program = [str(script)]
    else:
        program = [sys.executable, "-m", "cortex_rm"]
    return [*program, "node", "--config", str(config)]


def default_host(introducer: HostPort) -> str:
    """The local address this machine reaches ``introducer`` from (a UDP socket's connect picks the
    route; nothing is sent)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(introducer.host, introducer.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except OSError as e:
        raise ContributorError(f"cannot find this machine's address towards {introducer} ({e}): give --host") from None


def default_memory_mb() -> int:
    """Half of this machine's memory (the contributor's own work keeps the other half)."""
    return max(1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2)


def free_range_text(root: Path) -> str:
    """A container id range that meets no entry of ``root``'s /etc/subuid and /etc/subgid."""
    texts = []
    for name in ("subuid", "subgid"):
        try:
            texts.append((root / "etc" / name).read_text())
        except FileNotFoundError:
            pass
    return free_id_range(texts).text()


def install(root: Path | None, offer: NodeOffer, force: bool, say: Say) -> None:
    """Write the config, the unit and the manifest under ``root`` (None: this machine, and start the
    service when systemd runs it).  ContributorError (or ConfigError) before anything is written
    when the config would be refused or a file is there already (unless ``force``)."""
    target = root or Path("/")
    texts = {CONFIG_PATH: config_text(offer), UNIT_PATH: unit_text(entry_point_argv())}
    if not force:
        for path in texts:
            if under(target, path).exists():
                raise ContributorError(
                    f"{under(target, path)} exists (installed already?): run `cortex-rm contributor uninstall"
                    f"{_root_flag(root)}` first, or give --force to overwrite it"
                )
    old = _read_manifest(target) if under(target, MANIFEST_PATH).exists() else None
    made = list(old.made_dirs) if old else []
    for path in [*texts, MANIFEST_PATH]:
        made += _make_parents(target, path)
    made.sort(key=lambda p: (-len(PurePosixPath(p).parts), p))  # deepest first: uninstall's order
    files = (*texts, MANIFEST_PATH)
    manifest = Manifest(tuple(str(p) for p in files), tuple(dict.fromkeys(made)))
    # The manifest first: an install that stops half-way can still be uninstalled.
    _write(under(target, MANIFEST_PATH), manifest.text())
    for path, text in texts.items():
        _write(under(target, path), text)
        say(f"wrote {under(target, path)}")
    config = load_config(under(target, CONFIG_PATH))  # as the daemon reads it
    nm = config.nodemanager
    disk = f"{nm.disk_gb:g} GB disk" if nm.disk_gb else "no disk cap"
    say(f"offers {nm.vcores} CPUs, {nm.memory_mb} MB memory, {disk}; joins the ring through {offer.introducer}")
    if config.ring.address == offer.introducer:
        say(f"note: the introducer {offer.introducer} is this node's own ring address: it can only join a ring "
            "through another member; give that member's address")
    if root is None and SYSTEMD_RUNNING.is_dir():
        _systemctl(["daemon-reload"])
        _systemctl(["enable", "--now", UNIT_NAME])
        say(f"started and enabled {UNIT_NAME}; see it with: systemctl status cortex-rm; journalctl -u cortex-rm -f")
    elif root is None:
        say("systemd does not run this machine: the service is not started. Run the node with:")
        say("  " + " ".join(entry_point_argv()))
    else:
        say(f"not started (--root). On the system {target} becomes, run:")
        say(f"  systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")


def uninstall(root: Path | None, say: Say) -> None:
    """Stop and disable the service (systemd, no ``root``), remove what the manifest names and the
    directories install made when they are empty.  ContributorError without a manifest."""
    target = root or Path("/")
    manifest = _read_manifest(target)
    systemd = root is None and SYSTEMD_RUNNING.is_dir()
    if systemd:
        try:
            _systemctl(["disable", "--now", UNIT_NAME])
            say(f"stopped and disabled {UNIT_NAME}")
        except ContributorError as e:  # (a unit systemd never loaded): what install wrote goes anyway
            say(f"{e}; removing the files anyway")
    for name in manifest.files:
        path = under(target, PurePosixPath(name))
        if path.exists() or path.is_symlink():
            path.unlink()
            say(f"removed {path}")
    for name in manifest.made_dirs:
        path = under(target, PurePosixPath(name))
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            say(f"kept {path}: not empty")
    if systemd:
        _systemctl(["daemon-reload"])
    state = under(target, STATE_DIR)
    if state.exists():
        say(f"kept {state}: the node's identity and state; remove it with: rm -rf {state}")


def _root_flag(root: Path | None) -> str:
    return f" --root {root}" if root is not None else ""


def _read_manifest(target: Path) -> Manifest:
    path = under(target, MANIFEST_PATH)
    try:
        return Manifest.parse(path.read_text(), str(path))
    except FileNotFoundError:
        raise ContributorError(f"{path} not found: nothing installed there by `cortex-rm contributor install`") from None


def _make_parents(target: Path, path: PurePosixPath) -> list[str]:
    """Make the missing parents of ``path`` under ``target``; the ones made, as target paths."""
    missing = [p for p in path.parents if p != PurePosixPath("/") and not under(target, p).exists()]
    for p in reversed(missing):
        under(target, p).mkdir(mode=0o755)
    return [str(p) for p in missing]


def _write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a temporary file renamed over it), mode 0644."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    temporary.chmod(0o644)
    temporary.replace(path)


def _systemctl(args: Sequence[str]) -> None:
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ContributorError(f"systemctl {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")


def install_command(
    root: Path | None, introducer: str, resource_managers: Sequence[str], host: str | None,
    cpus: int | None, memory_mb: int | None, disk_gb: int, force: bool,
) -> int:  # fmt: skip
    """``contributor install``: 0, or 2 with a message naming what to change."""
    try:
        ring = HostPort.parse(introducer)
        ids = tuple(part.strip() for value in resource_managers for part in value.split(",") if part.strip())
        offer = NodeOffer(
            introducer=ring, resource_managers=ids, host=host or default_host(ring),
            vcores=cpus if cpus is not None else os.cpu_count() or 1,
            memory_mb=memory_mb if memory_mb is not None else default_memory_mb(), disk_gb=disk_gb, container_id_range=free_range_text(root or Path("/")),
        )  # fmt: skip
        install(root, offer, force, print)
    except (ContributorError, ConfigError, ValueError, OSError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    return 0


def uninstall_command(root: Path | None) -> int:
    """``contributor uninstall``: 0, or 2 with a message."""
    try:
        uninstall(root, print)
    except (ContributorError, OSError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    return 0
