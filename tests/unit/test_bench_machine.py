"""bench/machine.py: a run says which machine it ran on, in enough detail to tell two apart."""
from __future__ import annotations

import pytest

from bench.machine import (StealMeter, cpu_fields, cpu_text, cpu_times, loop_text, machine, python_loop_ms,
                           steal_pct, steal_text)
from bench.readme import machine_text

EPYC_VM = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cpu MHz\t\t: 2596.134
cache size\t: 1024 KB

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC (second)
cpu MHz\t\t: 1000.000
"""

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
cpu MHz\t\t: 2499.998
"""

# aarch64 kernels list no model name, family or clock.
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize("cpuinfo, expected", [
    (EPYC_VM, "AMD EPYC, family 25 model 17, 2596 MHz"),
    (XEON, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz, family 6 model 85, 2500 MHz"),
    ("", None),
    (ARM, None),
])
def test_cpu_text_tells_machines_of_one_name_apart(cpuinfo: str, expected: str | None) -> None:
    text = cpu_text(cpu_fields(cpuinfo))
    if expected is None:  # no model name: the platform's own name, never an empty string
        assert text and "family" not in text and "MHz" not in text
    else:
        assert text == expected


def test_only_the_first_processor_is_read() -> None:
    fields = cpu_fields(EPYC_VM)
    assert fields["model"] == "17" and fields["model name"] == "AMD EPYC"


def test_python_loop_is_timed_in_ms() -> None:
    ms = python_loop_ms(iterations=10_000, rounds=2)
    assert 0 < ms < 10_000


def test_machine_records_the_loop_and_its_size() -> None:
    m = machine()
    assert m["python_loop_ms"] > 0 and m["python_loop_steps"] == 1_000_000
    assert m["cores"] >= 1 and m["cpu"]


def test_readme_line_states_the_loop_and_older_runs_still_render() -> None:
    new = {"when": "2026-12-02T01:00:00Z", "machine": {
        "cpu": "AMD EPYC, family 25 model 17, 2596 MHz", "cores": 2, "memory_gib": 24, "system": "Linux 6",
        "python_loop_ms": 38.5, "python_loop_steps": 1_000_000, "load_average": [0.1, 0.2, 0.3]}}
    line = machine_text(new)
    assert ("on 2 cores (AMD EPYC, family 25 model 17, 2596 MHz; a fixed loop of 1,000,000 Python steps "
            "in 38.5 ms, best of 5), 24 GiB") in line
    old = {"when": "2026-12-01T06:58:32Z", "machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 24}}
    assert "on 2 cores (AMD EPYC), 24 GiB" in machine_text(old)
    assert loop_text(old["machine"]) == ""


# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice.
STAT_BEFORE = "cpu  45819 0 11123 1571070 4347 0 1742 2188 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
STAT_AFTER = "cpu  46819 0 11623 1572570 4347 0 1842 2788 500 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


@pytest.mark.parametrize("before, after, expected", [
    # 1000 user + 500 system + 1500 idle + 100 softirq + 600 steal = 3700 ticks; guest (500) is
    # inside user already and must not count twice.
    (STAT_BEFORE, STAT_AFTER, 16.2),
    (STAT_BEFORE, STAT_BEFORE, None),  # no time passed
    ("", STAT_AFTER, None),  # no /proc/stat line
    ("intr 1 2 3\n", STAT_AFTER, None),  # not the cpu line
    # A kernel without the steal column (before 2.6.11): nothing to say.
    ("cpu  1 2 3 4 5 6 7\n", "cpu  9 9 9 9 9 9 9\n", None),
])
def test_steal_share_of_the_cpu_time_that_passed(before: str, after: str, expected: float | None) -> None:
    assert steal_pct(cpu_times(before), cpu_times(after)) == expected


def test_steal_meter_measures_the_run_and_named_phases() -> None:
    meter = StealMeter()
    meter.start()
    meter.stop("latency")
    report = meter.report()
    assert set(report) == {"run", "phases"} and set(report["phases"]) == {"latency"}
    # Too short for the clock to move, or a share: never negative, never above the whole.
    for pct in (report["run"], report["phases"]["latency"]):
        assert pct is None or 0 <= pct <= 100
    assert machine(meter)["steal_pct"]["phases"] == report["phases"]


def test_readme_line_states_the_steal_of_the_run_and_its_phases() -> None:
    m = {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 24,
         "steal_pct": {"run": 6.5, "phases": {"latency": 11.0, "floors": None}}}
    assert "(AMD EPYC; CPU stolen by the hypervisor: 6.5% of the run (latency 11%)), 24 GiB" in machine_text(
        {"when": "x", "machine": m})
    assert steal_text({"steal_pct": None}) == "" and steal_text({}) == ""
    assert steal_text({"steal_pct": {"run": 0.0, "phases": {}}}) == "; CPU stolen by the hypervisor: 0% of the run"
