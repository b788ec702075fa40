"""``python -m fedmap_secure.experiments.sweep ARGS`` = ``fedmap-secure sweep ARGS``;
``python -m fedmap_secure.experiments.sweep report DIR`` = ``fedmap-secure report DIR``."""

import sys

from fedmap_secure.experiments.sweep.cli import report_main, sweep_main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(report_main(argv[1:]) if argv[:1] == ["report"] else sweep_main(argv))
