"""Running code the way a Hub user without this project runs it: a fresh Python in which none of the project's
packages can be imported, offline, with its own modules cache, so a model folder loads through its remote code only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROJECT_PACKAGES = ("modeling_pemscl", "data_collators", "docre_training", "model_cards", "run_docre")


def run_without_the_project(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run `code` (dedented) in a subprocess where importing any of `PROJECT_PACKAGES` fails; cwd is `tmp_path`."""
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in PROJECT_PACKAGES)
    script = f"import sys\n{blocked}{textwrap.dedent(code)}"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
