"""The execution layer: a run from config to store.

The run config (``config``), the plan and its dry-run estimate (``plan``), the worker that runs
work units on a loaded backbone (``worker``), the executors that place units (``executors``:
local; ``ray_executor``: Ray actors), the driver that commits every cell (``runner``), the lock
that keeps one writer per run folder (``runlock``), scoring outside the cell loop
(``scoring``: set metrics, ``editbench score``) and the progress display (``progress``).
"""
