"""Figure of the benchmarks page: ours / reference from docs/_data/compare.json.

The timings are committed (measured once by asv_bench/compare.py on the
machine named on the page); the build only draws them, so it stays fast and
deterministic.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

data = json.loads(Path("_data/compare.json").read_text())  # cwd: docs/ (conf.py)
rows = [r for r in data["rows"] if r["ours"] is not None and r["ref"]]
backends = sorted({r["backend"] for r in rows}, key=["numpy", "torch:cpu", "jax:cpu"].index)
dtypes = sorted({r["dtype"] for r in rows})
labels = []
for r in rows:
    key = f"{r['benchmark']} {tuple(r['shape'])}"
    if key not in labels:
        labels.append(key)

fig, ax = plt.subplots(figsize=(8.0, 0.3 * len(labels) + 1.6))
height = 0.8 / len(backends)
for k, backend in enumerate(backends):
    ratio = {
        f"{r['benchmark']} {tuple(r['shape'])}": r["ours"] / r["ref"]
        for r in rows
        if r["backend"] == backend
    }
    ys = [i + k * height for i, lab in enumerate(labels) if lab in ratio]
    xs = [ratio[lab] for lab in labels if lab in ratio]
    ax.barh(ys, xs, height=height, label=backend)

# A thin line between functions, so the four shapes of each read as a group.
functions = [lab.split(" (")[0] for lab in labels]
for i in range(1, len(labels)):
    if functions[i] != functions[i - 1]:
        ax.axhline(i - height / 2 - 0.1, color="0.75", lw=0.6)
ax.axvline(1.0, color="black", lw=1.0)

ax.set_xscale("log")
ticks = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
lo, hi = ax.get_xlim()
ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi]))
ax.xaxis.set_minor_locator(NullLocator())
ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _pos: f"{t:g}×"))
ax.tick_params(axis="x", labelsize=10)
ax.set_yticks(np.arange(len(labels)) + 0.4 - height / 2, labels, fontsize=9.5)
ax.set_ylim(len(labels) - 0.1, -0.3)  # top to bottom, in the table's order
ax.set_xlabel("time ours / time reference (log scale): left of 1×, ours is faster", fontsize=10.5)
ax.set_title(
    f"portable_softmax vs the reference, {', '.join(dtypes)}, {data.get('cpus', '?')} CPU cores",
    fontsize=12,
    loc="left",
)
ax.legend(fontsize=10, loc="lower right", title="backend", title_fontsize=10)
ax.grid(axis="x", alpha=0.35)
