"""bench/machine.py: a run says which machine it ran on, in enough detail to tell two apart."""
from __future__ import annotations

import pytest

from bench.machine import cpu_fields, cpu_text, loop_text, machine, python_loop_ms
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
