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
# Past this share of the run's CPU taken by the hypervisor, the run says its figures are disturbed.
STEAL_WARN_PCT = 2.0


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


def machine(steal: StealMeter | None = None) -> dict:
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
            "steal_pct": steal.report() if steal else None,
            # Other work on the machine weighs on every figure: the load when the run ended.
            "load_average": [round(x, 1) for x in os.getloadavg()]}


def loop_text(m: dict) -> str:
    """The calibration as the README's table states it ("" for runs made before it existed)."""
    ms, steps = m.get("python_loop_ms"), m.get("python_loop_steps")
    return f"; a fixed loop of {steps:,} Python steps in {ms:g} ms, best of {LOOP_ROUNDS}" if ms and steps else ""


def cpu_times(stat: str | None = None) -> list[int]:
    """The machine's CPU time so far, in clock ticks, by kind (/proc/stat's `cpu` line: user,
    nice, system, idle, iowait, irq, softirq, steal, ...); [] where there is no /proc/stat."""
    try:
        line = (stat if stat is not None else Path("/proc/stat").read_text()).split("\n", 1)[0]
    except OSError:
        return []
    fields = line.split()
    return [int(v) for v in fields[1:]] if fields[:1] == ["cpu"] else []


def steal_pct(before: list[int], after: list[int]) -> float | None:
    """Of the CPU time that passed between two `cpu_times()`, the share the hypervisor gave to
    other machines (steal), in %. Guest time is counted in user time already, so only the first
    eight kinds add up to the whole."""
    if len(before) < 8 or len(after) < 8:
        return None
    spent = [a - b for a, b in zip(after[:8], before[:8])]
    total = sum(spent)
    return round(100 * spent[7] / total, 1) if total > 0 else None


class StealMeter:
    """CPU stolen by the hypervisor over the run and over chosen phases. On a shared virtual
    machine two runs of the same tree an hour apart measured their floors 2-5x apart, and the
    hypervisor had taken CPU from the machine during the second: /proc/stat shows it, nothing
    else in a run's figures does."""

    def __init__(self) -> None:
        self.began = self._mark = cpu_times()
        self.phases: dict[str, float | None] = {}

    def start(self) -> None:
        self._mark = cpu_times()

    def stop(self, phase: str) -> None:
        self.phases[phase] = steal_pct(self._mark, cpu_times())

    def report(self) -> dict:
        return {"run": steal_pct(self.began, cpu_times()), "phases": dict(self.phases)}


def steal_text(m: dict) -> str:
    """The steal as the README's table and the run's last lines state it ("" if not measured)."""
    steal = m.get("steal_pct") or {}
    if steal.get("run") is None:
        return ""
    phases = ", ".join(f"{name} {pct:g}%" for name, pct in steal.get("phases", {}).items() if pct is not None)
    return f"; CPU stolen by the hypervisor: {steal['run']:g}% of the run" + (f" ({phases})" if phases else "")


def describe(m: dict) -> str:
    """The CPU, its loop time and the run's steal, as the run's last lines and the README's
    table state them (older runs: the CPU alone)."""
    return f"{m.get('cpu') or 'unknown CPU'}{loop_text(m)}{steal_text(m)}"
