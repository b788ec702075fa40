"""Privacy-utility sweeps: a grid of runs, resumable execution, and a comparison report.

Modules: ``spec`` (the grid and stable run ids), ``store`` (the on-disk result
layout), ``runner`` (resume, failure recording, progress), ``backends`` (local
processes or Ray), ``adapter`` (the ONE place that calls the simulation
engine), ``communication`` (bytes per round), ``report``/``plots``/``published``
(``report.md`` and PNGs), ``cli`` (``sweep_main``/``report_main``).
"""
