"""``python -m bench [--quick]`` from the repository root: the same as ``python bench/run.py``."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
runpy.run_path(str(Path(__file__).resolve().parent / "run.py"), run_name="__main__")
