"""Tests of the scenario loader (spec section 1): sizes, refusals with file/line/step/field,
and the defaults it resolves."""

from __future__ import annotations

import pytest

from foliosim.scenario import ScenarioError, load_scenario, load_scenario_text


def load(steps: str, head: str = "name: t\n") -> object:
    return load_scenario_text(f"{head}steps:\n{steps}", "t.yaml")


def refused(steps: str, head: str = "name: t\n") -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        load(steps, head)
    assert e.value.file == "t.yaml"
    return e.value


def test_sizes_with_binary_suffix() -> None:
    s = load("  - {op: mmap, region: a, size: 2M, misalign: 64K}\n"
             "  - {op: reserve, region: b, size: '1G'}\n"
             "  - {op: mmap, region: c, size: 8192}\n")
    assert [st.size for st in s.steps] == [2 << 20, 1 << 30, 8192]
    assert s.steps[0].misalign == 64 << 10


def test_unaligned_size_refused() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: mmap, region: b, size: 5000}\n")
    assert (e.line, e.step, e.field) == (4, 1, "size")
    assert "multiple of 4 KiB" in e.message


def test_unaligned_offset_refused() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: write, region: a, offset: 100}\n")
    assert (e.step, e.field) == (1, "offset")


def test_unknown_op() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: frob, region: a}\n")
    assert (e.line, e.step, e.field) == (4, 1, "op")
    assert "'frob'" in e.message and "mmap" in e.message


def test_unknown_field() -> None:
    e = refused("  - op: mmap\n"
                "    region: a\n"
                "    size: 2M\n"
                "    colour: red\n")
    assert (e.line, e.step, e.field) == (6, 0, "colour")
    assert e.message == "unknown field"


def test_unknown_field_in_settings() -> None:
    e = refused("  - {op: shrink}\n", head="name: t\nsettings:\n  enabld: always\n")
    assert (e.line, e.step, e.field) == (3, None, "enabld")


def test_unknown_region() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: mlock, region: b}\n")
    assert (e.line, e.step, e.field) == (4, 1, "region")
    assert "'b'" in e.message


def test_range_beyond_region_refused() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: write, region: a, offset: 1M, length: 2M}\n")
    assert (e.step, e.field) == (1, "length")


def test_unpin_twice() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: pin, region: a, id: p}\n"
                "  - {op: unpin, id: p}\n"
                "  - {op: unpin, id: p}\n")
    assert (e.line, e.step, e.field) == (6, 3, "id")


def test_unpin_unknown() -> None:
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: unpin, id: nope}\n")
    assert (e.step, e.field) == (1, "id")
    assert "never taken" in e.message


def test_defaults_resolved() -> None:
    s = load("  - {op: mmap, region: a, size: 2M}\n"
             "  - {op: write, region: a, offset: 512K}\n"
             "  - {op: write, region: a, value: 0}\n"
             "  - {op: mlock, region: a, length: 4K}\n")
    st = s.steps
    assert st[1].length == (2 << 20) - (512 << 10)
    assert st[1].value == 2  # step index + 1
    assert st[2].offset == 0 and st[2].length == 2 << 20 and st[2].value == 0
    assert st[3].length == 4096 and st[0].proc == "main"


def test_mremap_defaults() -> None:
    s = load("  - {op: mmap, region: a, size: 2M}\n"
             "  - {op: reserve, region: b, size: 4M}\n"
             "  - {op: mremap, region: a, length: 1M, to: b, to_offset: 2M}\n")
    assert s.steps[2].new_length == 1 << 20


def test_settings_defaults() -> None:
    s = load("  - {op: shrink}\n")
    assert s.format == "foliosim.scenario/1"
    assert s.settings.enabled == "madvise"
    assert s.settings.size_mode("2M") == "inherit" and s.settings.size_mode("64K") == "never"
    assert s.settings.use_zero_page and s.settings.shrink_underused
    assert s.settings.max_ptes_none == 511 and s.settings.swap == "none"


def test_fork_child_inherits_regions() -> None:
    s = load("  - {op: mmap, region: a, size: 2M}\n"
             "  - {op: fork, child: c}\n"
             "  - {op: write, proc: c, region: a, offset: 1M}\n"
             "  - {op: mmap, proc: c, region: own, size: 64K}\n")
    assert s.steps[2].proc == "c" and s.steps[2].length == 1 << 20
    # regions the child maps after the fork are its own
    e = refused("  - {op: mmap, region: a, size: 2M}\n"
                "  - {op: fork, child: c}\n"
                "  - {op: mmap, proc: c, region: own, size: 64K}\n"
                "  - {op: read, region: own}\n")
    assert (e.step, e.field) == (3, "region")


def test_exited_and_unknown_process_refused() -> None:
    e = refused("  - {op: fork, child: c}\n"
                "  - {op: exit, proc: c}\n"
                "  - {op: shrink, proc: c}\n")
    assert (e.step, e.field) == (2, "proc") and "exited" in e.message
    e = refused("  - {op: shrink, proc: ghost}\n")
    assert (e.step, e.field) == (0, "proc")


def test_broken_yaml_gives_line() -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario_text("name: t\nsteps:\n  - {op: mmap, region: a\n  - {op: read}\n",
                           "t.yaml")
    assert e.value.line == 4
    assert "YAML" in e.value.message
    assert str(e.value).startswith("t.yaml:4: ")


def test_bad_settings_value_names_field() -> None:
    e = refused("  - {op: shrink}\n", head="name: t\nsettings:\n  enabled: sometimes\n")
    assert (e.line, e.field) == (3, "enabled") and "'sometimes'" in e.message


def test_missing_required_field() -> None:
    e = refused("  - {op: mmap, region: a}\n")
    assert (e.step, e.field) == (0, "size") and "missing" in e.message


def test_load_scenario_from_file(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsteps:\n  - {op: mmap, region: a, size: 2M}\n")
    assert load_scenario(path).name == "s"
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(e.value)
