"""Run a few child processes as one unit: prefixed logs, readiness waits, ordered shutdown.

Children get their own process group, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them in reverse start order (Envoy before the services behind
it). A second Ctrl-C kills whatever is still running.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, TextIO

_COLOURS = ("36", "33", "35", "32", "34", "31")


class ChildExited(RuntimeError):
    """A child ended while it was expected to run."""

    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode


class StopRequested(RuntimeError):
    """SIGINT / SIGTERM arrived while the stack was still starting."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    pump: asyncio.Task
    stop_requested: bool = False

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@dataclass
class Supervisor:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._signals = 0
        self._colour = self.out.isatty() and not os.environ.get("NO_COLOR")
        self._width = 9

    # --- output ------------------------------------------------------------------------

    def _prefix(self, name: str, index: int) -> str:
        label = f"{name:<{self._width}}|"
        if self._colour:
            return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{label}\x1b[0m "
        return f"{label} "

    def say(self, message: str) -> None:
        """A line from the supervisor itself."""
        for line in message.splitlines() or [""]:
            self.out.write(f"{self._prefix('gateway', len(_COLOURS) - 1)}{line}\n")
        self.out.flush()

    def print_block(self, text: str) -> None:
        """Unprefixed text (banners, commands meant to be copied)."""
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    async def _pump(self, name: str, index: int, stream: asyncio.StreamReader) -> None:
        """Every complete line that is there, prefixed, in one write and one flush: a busy
        child (Envoy's access log under load) costs a write per read, not per line."""
        prefix = self._prefix(name, index)
        rest = b""
        while data := await stream.read(1 << 16):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if not cut:
                if len(data) < 1 << 16:
                    rest = data
                    continue
                cut = len(data)  # an overlong line: shown in pieces rather than held
            rest = data[cut:]
            lines = data[:cut].decode(errors="replace").split("\n")
            if lines[-1] == "":
                lines.pop()
            self.out.write("".join(f"{prefix}{line.rstrip(chr(13))}\n" for line in lines))
            self.out.flush()
        if rest:
            self.out.write(f"{prefix}{rest.decode(errors='replace').rstrip()}\n")
            self.out.flush()

    # --- signals -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self.say(f"{signal.Signals(sig).name}: stopping (again to kill at once)")
            self._stop.set()
        else:
            for child in self.children:
                if child.running:
                    child.process.kill()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, name: str, argv: list[str], env: Mapping[str, str], cwd: str) -> Child:
        if self.stopping:
            raise StopRequested()
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            # Own process group: the terminal's Ctrl-C goes to the supervisor only.
            process_group=0)
        index = len(self.children)
        assert process.stdout is not None
        child = Child(name, process, asyncio.create_task(self._pump(name, index, process.stdout)))
        self.children.append(child)
        return child

    async def wait_ready(self, child: Child, check: Callable[[], Awaitable[bool]],
                         timeout: float = 30.0) -> None:
        """Poll `check` until it is true; fail if the child exits, a signal arrives or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.stopping:
                raise StopRequested()
            if not child.running:
                await child.pump
                raise ChildExited(child.name, child.process.returncode)
            try:
                if await check():
                    return
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} was not ready after {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def run_until_stopped(self) -> Child | None:
        """Block until a signal asks to stop (None) or a child exits on its own (that child)."""
        stop = asyncio.create_task(self._stop.wait())
        exits = {asyncio.create_task(c.process.wait()): c for c in self.children}
        done, _ = await asyncio.wait({stop, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *exits):
            if task not in done:
                task.cancel()
        for task, child in exits.items():
            if task in done:
                await child.pump
                return child
        return None

    async def stop_all(self, timeout: float = 20.0) -> bool:
        """SIGTERM each child, newest first; SIGKILL any that outlives `timeout`.

        True when every child ended on its own after SIGTERM.
        """
        clean = True
        for child in reversed(self.children):
            if child.running:
                child.stop_requested = True
                child.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(child.process.wait(), timeout)
                except asyncio.TimeoutError:
                    self.say(f"{child.name} did not stop within {timeout:.0f} s: killing it")
                    child.process.kill()
                    await child.process.wait()
                    clean = False
            await child.pump
        # A second Ctrl-C killed what was left: not a clean stop.
        return clean and self._signals < 2
