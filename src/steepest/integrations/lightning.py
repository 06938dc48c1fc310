"""Lightning: the :class:`~steepest.diagnostics.LayerMonitor` as a callback, with its state in checkpoints.

::

    from steepest.integrations.lightning import LayerMonitorCallback
    trainer = L.Trainer(callbacks=[LayerMonitorCallback(every=10)])   # configure_optimizers returns steepest.Muon(...)
    trainer.fit(module)                   # records in <default_root_dir>/diagnostics; resume with ckpt_path=

Automatic optimization calls ``optimizer.step(closure)``; the monitor reads the gradients after the
closure ran (:meth:`LayerMonitor._pre` defers them), so every layer is recorded. On ``fit(ckpt_path=...)``
the monitor continues at the trainer's ``global_step`` (also when the checkpoint holds no state of this
callback, e.g. the monitor was added on resume), with its warm starts from the checkpoint when saved there
(``Callback.state_dict``); records an interrupted run wrote after that step are dropped from the sinks, so
no step appears twice.
"""

from __future__ import annotations

from pathlib import Path

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback  # type: ignore[assignment]  # same class, other package

from steepest.diagnostics import LayerMonitor, default_sinks


class LayerMonitorCallback(Callback):
    """Monitor the LightningModule while ``trainer.optimizers[optimizer_index]`` trains it.

    Args:
        every: record every ``every`` optimizer steps. sinks: record writers (default: JSONL + CSV
            (+ TensorBoard) under ``directory``, else ``<trainer.default_root_dir>/diagnostics``).
        monitor_kwargs: passed to :class:`~steepest.diagnostics.LayerMonitor`.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[LayerMonitorCallback(every=10, microbatches=0)], logger=False,
        ...                     enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    """

    def __init__(self, every: int = 10, sinks=None, directory=None, optimizer_index: int = 0, **monitor_kwargs) -> None:
        self.every, self.sinks, self.directory, self.index, self.kwargs = (
            every,
            sinks,
            directory,
            optimizer_index,
            monitor_kwargs,
        )
        self.monitor: LayerMonitor | None = None
        self._state: dict | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) <= self.index:
            raise ValueError(
                f"LayerMonitorCallback(optimizer_index={self.index}): the module configured "
                f"{len(trainer.optimizers)} optimizer(s)"
            )
        sinks = (
            self.sinks
            if self.sinks is not None
            else default_sinks(self.directory or Path(trainer.default_root_dir) / "diagnostics")
        )
        self.monitor = LayerMonitor(pl_module, every=self.every, sinks=sinks, **self.kwargs)
        self.monitor.attach(trainer.optimizers[self.index])

    def on_train_start(self, trainer, pl_module) -> None:
        # the loops (global_step) are restored after on_fit_start and before this hook; the count is the
        # trainer's, also when the checkpoint holds no state of this callback (the monitor added on resume)
        step = int(trainer.global_step)
        if self.monitor is not None and (self._state is not None or step > 0):
            self.monitor.load_state_dict({**(self._state or {"every": self.every}), "step": step})

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self._state = self.monitor.state_dict()
            self.monitor.detach()
            self.monitor = None

    def state_dict(self) -> dict:
        return self.monitor.state_dict() if self.monitor is not None else dict(self._state or {})

    def load_state_dict(self, state_dict: dict) -> None:
        self._state = dict(state_dict) if state_dict else None  # applied in on_train_start, at the global step


__all__ = ["LayerMonitorCallback"]
