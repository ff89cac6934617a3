"""Interrupted live runs leave the machine as they found it: every THP knob restored, no swap
file active or left behind, no scenario or helper process alive.

Each test runs a scenario whose settings change several knobs and enable a swap file, and
interrupts it mid-way: an exception from a hook, SIGKILL of an agent, SIGINT/SIGTERM to a runner
process, SIGKILL of a runner process (the next run recovers from its journal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foliosim.scenario import load_scenario_text
from foliosim.targets import live
from foliosim.targets.live import controller, session, swap
from foliosim.targets.live.sysfs import THP_DIR, read_knob

REASON = live.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
name: safety
settings: {sizes: {64K: madvise}, use_zero_page: false, shrink_underused: false,
           max_ptes_none: 300, swap: file}
steps:
  - {op: mmap, region: a, size: 2M}
  - {op: madvise, region: a, advice: hugepage}
  - {op: write, region: a}
  - {op: fork, child: c}
  - {op: write, region: a, proc: c, length: 64K}
  - {op: observe, label: x}
"""
STOP_AT = 4  # the child exists, the knobs are pushed, the swap file is on


def knobs() -> dict[str, str]:
    """Every THP knob a run may touch (and a few it must not)."""
    paths = [THP_DIR / "enabled", THP_DIR / "defrag", THP_DIR / "use_zero_page",
             THP_DIR / "shrink_underused", *sorted(THP_DIR.glob("hugepages-*kB/enabled")),
             *sorted((THP_DIR / "khugepaged").glob("m*")),
             THP_DIR / "khugepaged" / "scan_sleep_millisecs"]
    return {str(p): read_knob(p) for p in paths}


def our_swap() -> list[str]:
    files = sorted(str(p) for p in swap.SWAP_DIR.glob(f"{swap.SWAP_PREFIX}*.swap"))
    return [s for s in swap.active_swaps() if swap.SWAP_PREFIX in s] + files


def assert_gone(pids: list[list[int]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for pid, started in pids:
        while session.start_time(pid) == started:
            assert time.monotonic() < deadline, f"process {pid} of the run is still alive"
            time.sleep(0.02)


def assert_during_run(run: controller.LiveRun) -> None:
    """The run really changed the machine (so that restoring it means something)."""
    assert read_knob(THP_DIR / "khugepaged" / "max_ptes_none") == "300"
    assert read_knob(THP_DIR / "hugepages-64kB" / "enabled") == "madvise"
    assert read_knob(THP_DIR / "khugepaged" / "scan_sleep_millisecs") == "3600000"
    assert our_swap(), "no swap file during the run"
    assert len(run.procs) == 2


@pytest.fixture
def before() -> dict[str, str]:
    state = knobs()
    assert not our_swap()
    return state


def test_exception_in_a_step(before: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []

    def hook(index: int, step: object, run: controller.LiveRun) -> None:
        if index == STOP_AT:
            assert_during_run(run)
            seen.extend(run.journal.data["pids"])
            raise RuntimeError("boom in a step")

    monkeypatch.setattr(controller, "before_step", hook)
    affinity, thp_disable = os.sched_getaffinity(0), session.get_thp_disable()
    np_before = session.numpy_madvise_hugepage(False)  # reading it means setting it
    session.numpy_madvise_hugepage(np_before)
    with pytest.raises(RuntimeError, match="boom"):
        live.run(load_scenario_text(SCENARIO))
    assert len(seen) == 3  # helper, main, child
    assert knobs() == before
    assert not our_swap()
    assert_gone(seen)
    # the runner's own process is back as it was too
    assert os.sched_getaffinity(0) == affinity
    assert session.get_thp_disable() == thp_disable
    assert session.numpy_madvise_hugepage(np_before) is np_before


def test_sigkill_of_an_agent(before: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []

    def hook(index: int, step: object, run: controller.LiveRun) -> None:
        if index == STOP_AT:
            seen.extend(run.journal.data["pids"])
            os.kill(run.procs["c"].agent.pid, signal.SIGKILL)

    monkeypatch.setattr(controller, "before_step", hook)
    with pytest.raises(live.LiveError, match="died"):
        live.run(load_scenario_text(SCENARIO))
    assert knobs() == before
    assert not our_swap()
    assert_gone(seen)


RUNNER = textwrap.dedent("""
    import json, sys, time
    from foliosim.scenario import load_scenario_text
    from foliosim.targets import live
    from foliosim.targets.live import controller

    def hook(index, step, run):
        if index == {stop}:
            print(json.dumps(run.journal.data["pids"]), flush=True)
            time.sleep(60)

    controller.before_step = hook
    live.run(load_scenario_text({scenario!r}))
""")


def start_runner() -> tuple[subprocess.Popen[str], list[list[int]]]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(stop=STOP_AT, scenario=SCENARIO)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        pytest.fail(f"the runner did not reach step {STOP_AT}: {proc.stderr.read()}")
    return proc, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_runner(before: dict[str, str], sig: signal.Signals) -> None:
    proc, pids = start_runner()
    assert knobs() != before and our_swap()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert ("KeyboardInterrupt" if sig == signal.SIGINT else "LiveInterrupted") in err
    assert knobs() == before
    assert not our_swap()
    assert_gone(pids)


def test_sigkill_of_the_runner_is_recovered_by_the_next_run(before: dict[str, str]) -> None:
    proc, pids = start_runner()
    proc.kill()
    proc.communicate(timeout=30)
    assert_gone(pids)  # agents see their socket close, the helper has PR_SET_PDEATHSIG
    assert knobs() != before  # nothing could restore them...
    doc = live.run(load_scenario_text("name: next\nsteps: [{op: observe, label: x}]\n"))
    assert doc["observations"][0]["processes"]["main"]["regions"] == {}
    assert knobs() == before  # ...until the next run found the journal
    assert not our_swap()
    assert not session.JOURNAL_PATH.exists()
