"""A local Code Assist backend for offline tests: `python -m tests.simulator` (see README.md).

In-process: `tests.simulator.app.create_app()`; control client: `tests.simulator.control.SimControl`.
"""
