"""The application's one checkpoint API: run directories hold data, never code.

* :func:`save_checkpoint` / :func:`load_checkpoint` (``path, model, optimizer, extra``): a path ending
  in ``.pt`` is one file (``{"model", "optimizer", **extra}``, written atomically; what ``steepest
  compare`` keeps per optimizer), any other path a ``torch.distributed.checkpoint`` directory (a
  collective under a process group; DDP/FSDP2 state by fully qualified name, loadable on any world
  size; ``extra`` in ``extra.json`` beside it).
* :func:`read_checkpoint`: the payload of a ``.pt`` checkpoint without applying it (to check it first).
* :func:`rng_state` / :func:`set_rng_state`: the torch, numpy and Python RNG states as plain tensors,
  lists and numbers (no numpy objects), so a checkpoint loads with ``weights_only=True``.

Every load is data only: ``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists,
tuples, dicts) for ``.pt`` files and for the byte items of a DCP directory, and an allow-list
unpickler (:data:`DCP_METADATA_TYPES`: DCP's own metadata classes, ``torch.Size``, dtypes) for its
``.metadata`` file. A file that needs anything else (a pickled object whose ``__reduce__`` would run
code) is refused with :class:`CheckpointRefused` (a ConfigError: the CLI exits 2) naming the file and
the type; so is a truncated file (a ``.distcp`` shard shorter than its metadata says, named).

Example:
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> path = tempfile.mkdtemp() + "/muon.pt"
    >>> save_checkpoint(path, model, opt, {"step": 10})
    >>> load_checkpoint(path, model, opt)
    {'step': 10}
"""

from __future__ import annotations

import io
import os
import pickle
import random
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from steepest._io import atomic_write_bytes, atomic_write_json
from steepest.app.guard import read_json
from steepest.app.runs import ConfigError

#: The (module, name) pairs a DCP ``.metadata`` pickle may name (besides torch dtypes): what torch
#: 2.x writes there. Anything else is refused before it is called.
DCP_METADATA_TYPES = frozenset(
    {
        ("torch", "Size"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        *(
            ("torch.distributed.checkpoint.metadata", n)
            for n in (
                "BytesStorageMetadata",
                "ChunkStorageMetadata",
                "Metadata",
                "MetadataIndex",
                "StorageMeta",
                "TensorProperties",
                "TensorStorageMetadata",
                "_MEM_FORMAT_ENCODING",
            )
        ),
    }
)


class CheckpointRefused(ConfigError):
    """A checkpoint that is damaged, truncated, or needs more than plain data to load."""


# ------------------------------------------------------------------------------------ RNG states as data
def rng_state() -> dict:
    """The torch, numpy (MT19937) and Python RNG states as tensors, lists and numbers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": [int(version), [int(x) for x in internal], gauss_next],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (bit for bit)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["gauss"]))
    )
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))


# ------------------------------------------------------------------------------------ one file (.pt)
def _regular_file(path: Path, fix: str) -> None:
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointRefused(f"{path} cannot be read ({e.strerror}): {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointRefused(f"{path} is not a regular file (a directory or a device): {fix}")


def read_checkpoint(path: str | os.PathLike, fix: str = "delete it or restore it") -> Any:
    """The payload of the ``.pt`` checkpoint ``path``, loaded as data only (``weights_only=True``).

    :class:`CheckpointRefused` naming ``path`` (and ``fix``) when it is not a regular file, truncated,
    or needs a type outside torch's weights-only allow-list (nothing in it runs).
    """
    path = Path(path)
    _regular_file(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointRefused(
            f"{path} is refused: loading it would need more than plain data (tensors, numbers, strings, "
            f"lists, dicts), so it may run code; steepest loads checkpoints as data only ({_why(e)}): "
            f"{fix}"
        ) from None
    except Exception as e:  # truncated zip, garbage
        raise CheckpointRefused(
            f"{path} is truncated or not a checkpoint ({type(e).__name__}: {str(e)[:200]}): {fix}"
        ) from None


def _why(e: Exception) -> str:
    """The line of torch's weights-only refusal that names the type (``... GLOBAL posix.system ...``)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(e).__name__])[0][:200]


def _save_file(path: Path, model, optimizer, extra: dict) -> None:
    buf = io.BytesIO()  # serialized first: the one writer (atomic, names the file on a full disk) writes it
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_file(path: Path, model, optimizer) -> dict:
    fix = "delete it to start from scratch, or restore it"
    payload = read_checkpoint(path, fix)
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), dict) for k in ("model", "optimizer")):
        raise CheckpointRefused(f"{path} is not a steepest checkpoint (expected keys 'model' and 'optimizer'): {fix}")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointRefused(
            f"{path} does not fit this model or optimizer ({type(e).__name__}: {str(e)[:300]}): {fix}"
        ) from None
    return {k: v for k, v in payload.items() if k not in ("model", "optimizer")}


# ------------------------------------------------------------------------------------ DCP directories
class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in DCP_METADATA_TYPES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")


_DCP_FIX = "restore the checkpoint directory or start from scratch"


def _read_metadata(meta_path: Path):
    """A DCP ``.metadata`` file unpickled through the allow-list; CheckpointRefused naming it otherwise."""
    _regular_file(meta_path, _DCP_FIX)
    try:
        with open(meta_path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise CheckpointRefused(
            f"{meta_path} is refused: {e} (steepest loads checkpoints as data only): {_DCP_FIX}"
        ) from None
    except Exception as e:
        raise CheckpointRefused(
            f"{meta_path} is truncated or not checkpoint metadata ({type(e).__name__}: {str(e)[:200]}): {_DCP_FIX}"
        ) from None


def _safe_reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        """DCP's file reader with its ``.metadata`` unpickled by an allow-list (it uses plain pickle)."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            rank = kwargs.get("rank")
            meta_path = path / (".metadata" if rank is None else f"__{rank}.metadata")
            if rank is not None and not meta_path.exists():
                raise FileNotFoundError(meta_path)  # DCP then uses the global metadata, as with its own reader
            metadata = _read_metadata(meta_path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


def _check_shards(path: Path, metadata, fix: str) -> None:
    """CheckpointRefused naming the first ``.distcp`` file that is missing or shorter than its metadata says."""
    need: dict[str, int] = {}
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), int(info.offset) + int(info.length))
    for rel, size in sorted(need.items()):
        shard = path / rel
        if not shard.is_file():
            raise CheckpointRefused(f"{shard} (a shard of checkpoint {path}) is missing: {fix}")
        have = shard.stat().st_size
        if have < size:
            raise CheckpointRefused(f"{shard} is truncated: {have} bytes, its metadata needs {size}: {fix}")


def _safe_planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        """DCP's planner with non-tensor items loaded as data only (it uses ``weights_only=False``)."""

        def load_bytes(self, read_item, value) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                raise CheckpointRefused(
                    f"item {read_item.dest_index.fqn} of a checkpoint is refused: it needs more "
                    f"than plain data ({_why(e)})"
                ) from None
            clean = io.BytesIO()  # what DCP unpickles next is our own pickle of plain data
            torch.save(obj, clean)
            clean.seek(0)
            super().load_bytes(read_item, clean)

    return SafePlanner()


def _save_dir(path: Path, model, optimizer, extra: dict) -> None:
    import torch.distributed.checkpoint as dcp  # lazy: heavy, and only directory checkpoints need it
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if not dist.is_initialized() or dist.get_rank() == 0:  # before dcp.save, whose collectives order it
        atomic_write_json(path / "extra.json", dict(extra))
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path), no_dist=not dist.is_initialized())


def _load_dir(path: Path, model, optimizer) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not path.is_dir():
        raise CheckpointRefused(f"no checkpoint directory at {path}")
    _check_shards(path, _read_metadata(path / ".metadata"), _DCP_FIX)  # refusals name the file, before DCP
    msd, osd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": msd, "optim": osd}
    try:
        dcp.load(state, storage_reader=_safe_reader(path), planner=_safe_planner(), no_dist=not dist.is_initialized())
    except CheckpointRefused:
        raise
    except Exception as e:  # DCP wraps a rank's failure in CheckpointException: show the refusal it holds
        inner = _refusal_in(e)
        if inner is not None:
            raise inner from None
        raise CheckpointRefused(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {str(e)[:300]})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = path / "extra.json"
    return read_json(extra, "the checkpoint's extra data", "restore it or delete it") if extra.exists() else {}


def _refusal_in(e: BaseException) -> CheckpointRefused | None:
    """The CheckpointRefused inside a DCP CheckpointException (``failures``: rank -> exception) or chain."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 10:
        if isinstance(cur, CheckpointRefused):
            return cur
        for inner in (getattr(cur, "failures", None) or {}).values():
            found = _refusal_in(inner[0] if isinstance(inner, tuple) else inner)
            if found is not None:
                return found
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return None


# ------------------------------------------------------------------------------------ the API
def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer, extra: dict | None = None) -> None:
    """Save ``model`` and ``optimizer`` state and the plain data ``extra`` (see the module docstring:
    a ``.pt`` path is one atomic file, any other path a DCP directory written collectively)."""
    path = Path(path)
    (_save_file if path.suffix == ".pt" else _save_dir)(path, model, optimizer, dict(extra or {}))


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer) -> dict:
    """Load a :func:`save_checkpoint` into ``model`` and ``optimizer`` (resharding DTensor state to this
    world size for a directory); returns ``extra``. Data only: :class:`CheckpointRefused` otherwise."""
    path = Path(path)
    return (_load_file if path.suffix == ".pt" else _load_dir)(path, model, optimizer)


__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "rng_state",
    "set_rng_state",
    "CheckpointRefused",
    "DCP_METADATA_TYPES",
]
