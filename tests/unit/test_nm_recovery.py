"""NodeManager recovery: the container records, the recovery decisions and a re-attached container,
with a fake process table and a fake clock."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from cortex_rm.container.id_ranges import IdBlocks, IdRange, IdRangeError, node_id_range
from cortex_rm.container.lxc_config import RECORDING_WRAPPER_SCRIPT
from cortex_rm.container.nm_recovery import (
    EXIT_CODE_FILE,
    LOST_EXIT_CODE,
    Completed,
    ContainerRecord,
    ContainerRecordStore,
    Reattach,
    pid_start_ticks,
    recover,
    same_process_alive,
    written_exit_code,
)
from cortex_rm.container.recovered_container import POLL_S, RecoveredContainer
from cortex_rm.container.runtime import SIGKILL_EXIT_CODE


def _record(cid: str = "container_1_0001_01_000002", **kw: object) -> ContainerRecord:
    base = ContainerRecord(
        container_id=cid,
        application="application_1_0001",
        user="alice",
        memory_mb=1024,
        vcores=1,
        priority=1,
        creation_time_ms=1234,
        work_dir=f"/nm/usercache/alice/appcache/application_1_0001/{cid}",
        log_dir=f"/logs/application_1_0001/{cid}",
        cgroup_dir=f"cortex/b1/{cid}",
        lxc_name=cid,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_record_survives_the_store_and_gets_its_pid_once_launched(tmp_path: Path) -> None:
    """A record written before the start is read back as written; ``launched`` adds the pid."""
    store = ContainerRecordStore(tmp_path / "nm-recovery")
    record = _record()
    store.write(record)
    assert store.load() == [record]
    store.launched(record.container_id, 4242, 777)
    assert store.load() == [replace(record, pid=4242, pid_start_ticks=777)]
    store.remove(record.container_id)
    assert store.load() == []


def test_an_unreadable_or_misnamed_record_is_dropped(tmp_path: Path) -> None:
    """A torn or foreign record file is removed (and logged), the others are kept."""
    store = ContainerRecordStore(tmp_path)
    good = _record("container_1_0001_01_000003")
    store.write(good)
    (tmp_path / "container_1_0001_01_000004.json").write_text("{not json")
    (tmp_path / "container_1_0001_01_000005.json").write_text(_record("container_1_0001_01_000006").to_json())
    (tmp_path / "container_1_0001_01_000007.json").write_text('{"container_id": "x", "bogus": 1}')
    assert store.load() == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["container_1_0001_01_000003.json"]


@pytest.mark.parametrize(
    "text",
    ['{"container_id": "../x"}', "[]", '{"container_id": 1}', "null"],
)
def test_record_decoder_refuses_what_is_not_a_record(text: str) -> None:
    """ValueError for a record that is not an object, misses fields or names a path."""
    with pytest.raises(ValueError):
        ContainerRecord.from_json(text)
    with pytest.raises(ValueError):
        ContainerRecord.from_json(replace(_record(), pid=-3).to_json())


def test_recovery_decisions_from_a_fake_process_table() -> None:
    """Alive (same pid, same start time): re-attached; gone with a written exit code: complete with it;
    gone without one, or never started, or its pid reused by another process: LOST (154)."""
    running = _record("container_1_0001_01_000002", pid=100, pid_start_ticks=5)
    ended = _record("container_1_0001_01_000003", pid=101, pid_start_ticks=6)
    killed = _record("container_1_0001_01_000004", pid=102, pid_start_ticks=7)
    never = _record("container_1_0001_01_000005")
    reused = _record("container_1_0001_01_000006", pid=103, pid_start_ticks=8)
    table = {100: 5, 103: 99}  # pid -> start ticks: 103 is another process now
    codes = {ended.container_id: 3}

    def alive(r: ContainerRecord) -> bool:
        return r.pid in table and table[r.pid] == r.pid_start_ticks

    decisions = recover([running, ended, killed, never, reused], alive, lambda r: codes.get(r.container_id))
    assert decisions[0] == Reattach(running)
    assert isinstance(decisions[1], Completed) and decisions[1].exit_code == 3
    for d in decisions[2:]:
        assert isinstance(d, Completed) and d.exit_code == LOST_EXIT_CODE
        assert f"non-zero exit code {LOST_EXIT_CODE}" in d.diagnostics


def test_the_real_probes_see_a_process_and_a_written_exit_code(tmp_path: Path) -> None:
    """``same_process_alive`` tells a live process (and not one with another start time) from an
    ended one; ``written_exit_code`` reads a number and refuses a symlink or junk."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        ticks = pid_start_ticks(child.pid)
        assert ticks is not None
        assert same_process_alive(_record(pid=child.pid, pid_start_ticks=ticks))
        assert not same_process_alive(_record(pid=child.pid, pid_start_ticks=ticks + 1))
    finally:
        child.kill()
        child.wait()
    assert not same_process_alive(_record(pid=child.pid, pid_start_ticks=ticks))
    record = _record(work_dir=str(tmp_path))
    assert written_exit_code(record) is None
    (tmp_path / EXIT_CODE_FILE).write_text("143\n")
    assert written_exit_code(record) == 143
    (tmp_path / EXIT_CODE_FILE).write_text("-1; rm -rf /")
    assert written_exit_code(record) is None
    (tmp_path / EXIT_CODE_FILE).unlink()
    (tmp_path / "elsewhere").write_text("0")
    (tmp_path / EXIT_CODE_FILE).symlink_to(tmp_path / "elsewhere")
    assert written_exit_code(record) is None


def test_the_recording_wrapper_writes_the_commands_exit_code(tmp_path: Path) -> None:
    """The wrapper exits with the command's code and leaves it in the named file (its cwd)."""
    # (``kill -KILL -1`` of the wrapper would kill every process of this user: run it in a pid namespace
    # only in the real container; here the wrapper's kill is neutralized by a function of the same name)
    script = "kill() { :; }; " + RECORDING_WRAPPER_SCRIPT.replace("exec 3>&-; ", "")
    done = subprocess.run(["/bin/sh", "-c", script, "w", EXIT_CODE_FILE, "/bin/sh", "-c", "exit 7"], cwd=tmp_path)
    assert done.returncode == 7
    assert (tmp_path / EXIT_CODE_FILE).read_text().strip() == "7"


class _FakeProcesses:
    """A recovered container's process table: init runs until ended."""

    def __init__(self) -> None:
        self.init_alive = True
        self.signals: list[int] = []
        self.exit_code: int | None = None
        self.finished = 0

    def container(self, clock: Clock) -> RecoveredContainer:
        def kill_init() -> None:
            self.init_alive = False

        def finished() -> None:
            self.finished += 1

        return RecoveredContainer(
            "container_1_0001_01_000002", 100, clock,
            alive=lambda: self.init_alive, exit_code=lambda: self.exit_code,
            signal_others=self.signals.append, kill_init=kill_init, finished=finished,
        )  # fmt: skip


def test_a_recovered_container_reports_its_end_with_the_written_exit_code() -> None:
    """It is started at once, and its end is seen within a poll, with the wrapper's exit code."""
    clock, procs = Clock(), _FakeProcesses()
    c = procs.container(clock)
    assert c.started.called
    clock.advance(0)
    clock.advance(POLL_S * 5)
    assert not c.exited.called
    procs.init_alive, procs.exit_code = False, 3
    clock.advance(POLL_S)
    exits: list[object] = []
    c.exited.addCallback(exits.append)
    assert [e.exit_code for e in exits] == [3]  # type: ignore[attr-defined]
    assert procs.finished == 1


def test_a_recovered_container_that_ends_without_a_code_is_lost() -> None:
    """No exit code written (the container was killed as a whole): YARN's LOST, 154."""
    clock, procs = Clock(), _FakeProcesses()
    c = procs.container(clock)
    procs.init_alive = False
    clock.advance(0)
    exits: list[object] = []
    c.exited.addCallback(exits.append)
    assert [e.exit_code for e in exits] == [LOST_EXIT_CODE]  # type: ignore[attr-defined]


def test_killing_a_recovered_container_terms_then_kills_init_after_the_grace() -> None:
    """SIGTERM to the others at once, SIGKILL to init when the grace has passed; ends as 137."""
    clock, procs = Clock(), _FakeProcesses()
    c = procs.container(clock)
    clock.advance(0)
    c.kill(2.5)
    c.kill(2.5)  # a second kill changes nothing
    assert procs.signals == [signal.SIGTERM] and procs.init_alive
    clock.advance(2.5)
    assert not procs.init_alive
    clock.advance(0)
    exits: list[object] = []
    c.exited.addCallback(exits.append)
    assert [e.exit_code for e in exits] == [SIGKILL_EXIT_CODE]  # type: ignore[attr-defined]
    c.signal(signal.SIGUSR1)  # after its end: nothing
    assert procs.signals == [signal.SIGTERM]
    assert not clock.getDelayedCalls()


def test_an_application_takes_its_block_of_ids_again_after_a_restart() -> None:
    """``take_again``: the block a recovered container ran with is its application's again, so a new
    application gets another; a block of another application, or outside the range, is refused."""
    ids = IdRange.parse(node_id_range(3))
    blocks = IdBlocks(ids)
    second = ids.block(1)
    assert blocks.take_again("application_1_0001", second.number) == second
    assert blocks.take("application_1_0002") == (ids.block(0), True)
    assert blocks.take("application_1_0003")[0] == ids.block(2)  # the recovered one's block is skipped
    with pytest.raises(IdRangeError):
        blocks.take_again("application_1_0004", second.number)
    with pytest.raises(IdRangeError):
        blocks.take_again("application_1_0004", ids.block(0).number - 1)
