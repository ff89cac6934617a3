"""THP knobs in /sys/kernel/mm/transparent_hugepage and a stack that restores them.

Knobs written for a run (spec 1.2): ``enabled``, ``hugepages-<N>kB/enabled`` for every size that
has one, ``use_zero_page``, ``shrink_underused``, ``khugepaged/max_ptes_none``; while
khugepaged is parked also ``khugepaged/scan_sleep_millisecs``. Every knob is restored to the
value it had before, in reverse order, on every exit path of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from foliosim.scenario.model import Settings

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
#: pause after changing an ``enabled`` knob: switching PMD THPs off stops the khugepaged thread
#: and switching them on starts a new one whose first pass runs at once (mm/khugepaged.c:
#: start_stop_khugepaged)
SETTLE_SECONDS = 1.0


def read_knob(path: Path) -> str:
    """The current value of a knob; for choice knobs (``always [madvise] never``) the chosen one."""
    text = path.read_text().strip()
    if "[" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text


def write_knob(path: Path, value: str) -> None:
    """Write a knob (raises OSError when the kernel refuses the value)."""
    with open(path, "w") as f:
        f.write(value)


def size_name(kb: int) -> str:
    """``64K`` for 64 kB, ``2M`` for 2048 kB (the spec's size names)."""
    return f"{kb // 1024}M" if kb >= 1024 and kb % 1024 == 0 else f"{kb}K"


def size_knobs() -> dict[str, Path]:
    """Size name -> ``hugepages-<N>kB/enabled`` for every size this kernel offers for anon THP."""
    out = {}
    for d in THP_DIR.glob("hugepages-*kB"):
        knob = d / "enabled"
        if knob.exists():
            out[size_name(int(d.name[len("hugepages-"):-2]))] = knob
    return dict(sorted(out.items(), key=lambda kv: _size_kb(kv[0])))


def _size_kb(name: str) -> int:
    return int(name[:-1]) * (1024 if name.endswith("M") else 1)


def desired_knobs(settings: Settings) -> dict[Path, str]:
    """Every knob the settings determine, with the value to write (spec 1 ``settings``)."""
    knobs: dict[Path, str] = {THP_DIR / "enabled": settings.enabled}
    for name, path in size_knobs().items():
        knobs[path] = settings.size_mode(name)
    knobs[THP_DIR / "use_zero_page"] = "1" if settings.use_zero_page else "0"
    knobs[THP_DIR / "shrink_underused"] = "1" if settings.shrink_underused else "0"
    knobs[THP_DIR / "khugepaged" / "max_ptes_none"] = str(settings.max_ptes_none)
    return knobs


def settles(path: Path) -> bool:
    """Whether changing this knob can start or stop the khugepaged thread."""
    return path.name == "enabled" and path.parent.name.startswith(("hugepages-", "transparent"))


class SettingsStack:
    """Knob values pushed for a run; :meth:`restore` writes the old values back in reverse.

    ``journal`` is called with ``{path: old value}`` after every push so that a later run can
    restore the knobs if this process dies without running :meth:`restore` (SIGKILL).
    """

    def __init__(self, journal: Callable[[dict[str, str]], None] | None = None) -> None:
        self._stack: list[tuple[Path, str]] = []
        self._journal = journal

    @property
    def originals(self) -> dict[str, str]:
        """Knob path -> value before the first push."""
        out: dict[str, str] = {}
        for path, old in self._stack:
            out.setdefault(str(path), old)
        return out

    def push(self, path: Path, value: str) -> bool:
        """Set a knob for the run; returns whether its value changed."""
        old = read_knob(path)
        if old == value:
            return False
        self._stack.append((path, old))
        if self._journal:
            self._journal(self.originals)
        write_knob(path, value)
        return True

    def push_settings(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep
                      ) -> None:
        """Push every knob of ``settings``; wait :data:`SETTLE_SECONDS` if a THP mode changed."""
        changed = [p for p, v in desired_knobs(settings).items() if self.push(p, v)]
        if any(settles(p) for p in changed):
            sleep(SETTLE_SECONDS)

    def restore(self, *, sleep: Callable[[float], None] = time.sleep) -> list[str]:
        """Write every old value back (newest first); returns error messages, never raises."""
        errors = []
        settle = False
        while self._stack:
            path, old = self._stack.pop()
            try:
                write_knob(path, old)
                settle |= settles(path)
            except OSError as e:
                errors.append(f"cannot restore {path} to {old!r}: {e}")
        if self._journal and not errors:
            self._journal({})
        if settle:
            sleep(SETTLE_SECONDS)
        return errors


def restore_knobs(originals: dict[str, str]) -> list[str]:
    """Write recorded original values back (crash recovery); returns error messages."""
    errors = []
    for path, old in reversed(list(originals.items())):
        try:
            if read_knob(Path(path)) != old:
                write_knob(Path(path), old)
        except OSError as e:
            errors.append(f"cannot restore {path} to {old!r}: {e}")
    return errors
