"""Figure of the MNIST tutorial: the training loss of ps.train, drawn by the docs build.

A short run (300 steps of the tutorial's settings on NumPy, about 0.1 s of
training on a 2-core VM) so the build stays fast; the curve has flattened by then.
"""

import matplotlib.pyplot as plt
import numpy as np

import portable_softmax as ps

STEPS = 300

fig, ax = plt.subplots()
if hasattr(ps, "train") and hasattr(ps, "datasets"):
    X, y = ps.datasets.load_mnist("train")
    X_test, y_test = ps.datasets.load_mnist("test")
    model = ps.SoftmaxRegression(784, 10)
    history = ps.train(model, X, y, steps=STEPS)
    loss = np.asarray(history["loss"] if isinstance(history, dict) else history.loss)
    window = 20
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(1, len(loss) + 1), loss, lw=0.6, alpha=0.4, label="per step")
    ax.plot(np.arange(window, len(loss) + 1), smooth, lw=1.8, label=f"mean of {window} steps")
    acc = float(model.accuracy(X_test, y_test))
    ax.set_title(f"softmax regression on MNIST, NumPy: test accuracy {acc:.3f} after {STEPS} steps")
    ax.legend()
else:  # the MNIST part of the package is not installed in this build
    ax.text(0.5, 0.5, "ps.train / ps.datasets not available", ha="center", va="center")
ax.set_xlabel("SGD step (batch 100, lr 0.5)")
ax.set_ylabel("cross-entropy loss")
ax.set_ylim(bottom=0)
ax.grid(alpha=0.3)
