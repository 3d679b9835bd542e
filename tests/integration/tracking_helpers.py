"""Running `loyalty-model train` in processes of their own, several at once, for the tracking
store tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "loyalty-model"

# a quick train on `tiny` (about 20 s on 2 cores instead of about 40): what is tested is the
# tracking store, not the model
QUICK = (
    "--set",
    "model.n_estimators=30",
    "--set",
    "model.early_stopping_rounds=10",
    "--set",
    "model.calibration_folds=2",
    "--set",
    "evaluation.truth_max_followers=0",
)
REGISTERED = re.compile(r"model (\S+) version (\d+)\s+aliases: ([\w, ]+)")


def trains_at_once(n: int, data: Path, store: str, cwd: Path) -> list[tuple[str, set[str]]]:
    """Start `n` trains together against `store`; each one's (version, aliases). Every one
    must succeed."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    procs = [
        subprocess.Popen(
            [str(CLI), "train", "--data", str(data), *QUICK],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    results = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
        assert "Traceback" not in err, err
        found = REGISTERED.search(out)
        assert found, out
        results.append((found[2], {a.strip() for a in found[3].split(",")}))
    return results
