"""Figure of the benchmarks page: ours / reference from docs/_data/compare.json.

The timings are committed (measured once by asv_bench/compare.py on the
machine named on the page); the build only draws them, so it stays fast and
deterministic.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

data = json.loads(Path("_data/compare.json").read_text())  # cwd: docs/ (conf.py)
rows = [r for r in data["rows"] if r["ours"] is not None and r["ref"]]
backends = sorted({r["backend"] for r in rows}, key=["numpy", "torch:cpu", "jax:cpu"].index)
labels = []
for r in rows:
    key = f"{r['benchmark']} {tuple(r['shape'])}"
    if key not in labels:
        labels.append(key)

fig, ax = plt.subplots(figsize=(7.5, 0.24 * len(labels) + 1.2))
height = 0.8 / len(backends)
for k, backend in enumerate(backends):
    ratio = {f"{r['benchmark']} {tuple(r['shape'])}": r["ours"] / r["ref"]
             for r in rows if r["backend"] == backend}
    ys = [i + k * height for i, lab in enumerate(labels) if lab in ratio]
    xs = [ratio[lab] for lab in labels if lab in ratio]
    ax.barh(ys, xs, height=height, label=backend)
ax.axvline(1.0, color="black", lw=0.8)
ax.set_xscale("log")
ax.set_yticks(np.arange(len(labels)) + 0.4 - height / 2, labels, fontsize=7)
ax.invert_yaxis()
ax.set_xlabel("time ours / time reference (log scale; < 1: ours faster)")
ax.legend(fontsize=8, loc="lower right")
ax.grid(axis="x", alpha=0.3, which="both")
