"""What a `make bench` run was measured on, in enough detail to tell two machines apart.

Virtual machines often show only "AMD EPYC" as the CPU's name, and two runs on machines of that
name measured the same tree about 2x apart (every floor too). So a run records the CPU's family,
model and clock as /proc/cpuinfo gives them, and times a fixed piece of pure Python: how fast
this machine's cores run the interpreter, which is most of what our processes do. Figures from
runs whose loop times differ are not comparable; a goal against its floor from the same run is.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

LOOP_ITERATIONS = 1_000_000
LOOP_ROUNDS = 5


def cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_text(fields: dict[str, str]) -> str:
    """"AMD EPYC, family 25 model 17, 2596 MHz": the name alone does not tell machines apart."""
    name = fields.get("model name") or platform.processor() or platform.machine()
    ident = " ".join(f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
                      if fields.get(key))
    parts = [name] + ([ident] if ident else [])
    try:
        parts.append(f"{float(fields['cpu MHz']):.0f} MHz")
    except (KeyError, ValueError):
        pass
    return ", ".join(parts)


def python_loop_ms(iterations: int = LOOP_ITERATIONS, rounds: int = LOOP_ROUNDS) -> float:
    """Best of `rounds` timings of a fixed pure-Python loop, in ms (the best: the least disturbed
    by other work on the machine)."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i & 7
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1)


def machine() -> dict:
    """What the figures were measured on (the README's table names it)."""
    try:
        fields = cpu_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        fields = {}
    try:
        mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    except OSError:
        mem = 0
    return {"cpu": cpu_text(fields), "cores": os.cpu_count(), "memory_gib": round(mem / (1 << 20)),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "python_loop_ms": python_loop_ms(), "python_loop_steps": LOOP_ITERATIONS,
            # Other work on the machine weighs on every figure: the load when the run ended.
            "load_average": [round(x, 1) for x in os.getloadavg()]}


def loop_text(m: dict) -> str:
    """The calibration as the README's table states it ("" for runs made before it existed)."""
    ms, steps = m.get("python_loop_ms"), m.get("python_loop_steps")
    return f"; a fixed loop of {steps:,} Python steps in {ms:g} ms, best of {LOOP_ROUNDS}" if ms and steps else ""
