"""Lightning: the :class:`~steepest.diagnostics.LayerMonitor` as a callback, with its state in checkpoints.

::

    from steepest.integrations.lightning import LayerMonitorCallback
    trainer = L.Trainer(callbacks=[LayerMonitorCallback(every=10)])   # configure_optimizers returns steepest.Muon(...)
    trainer.fit(module)                   # records in <default_root_dir>/diagnostics; resume with ckpt_path=

Automatic optimization calls ``optimizer.step(closure)``; the monitor reads the gradients after the
closure ran (:meth:`LayerMonitor._pre` defers them), so every layer is recorded. The monitor's step is
saved in the checkpoint (``Callback.state_dict``) and restored on ``fit(ckpt_path=...)``; records an
interrupted run wrote after that checkpoint are dropped from the sinks, so no step appears twice.
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

    def __init__(self, every: int = 10, sinks=None, directory=None, optimizer_index: int = 0,
                 **monitor_kwargs) -> None:
        self.every, self.sinks, self.directory, self.index, self.kwargs = every, sinks, directory, optimizer_index, \
            monitor_kwargs
        self.monitor: LayerMonitor | None = None
        self._state: dict | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) <= self.index:
            raise ValueError(f"LayerMonitorCallback(optimizer_index={self.index}): the module configured "
                             f"{len(trainer.optimizers)} optimizer(s)")
        sinks = self.sinks if self.sinks is not None else \
            default_sinks(self.directory or Path(trainer.default_root_dir) / "diagnostics")
        self.monitor = LayerMonitor(pl_module, every=self.every, sinks=sinks, **self.kwargs)
        self.monitor.attach(trainer.optimizers[self.index])
        if self._state is not None:
            self.monitor.load_state_dict(self._state)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self._state = self.monitor.state_dict()
            self.monitor.detach()
            self.monitor = None

    def state_dict(self) -> dict:
        return self.monitor.state_dict() if self.monitor is not None else dict(self._state or {})

    def load_state_dict(self, state_dict: dict) -> None:
        self._state = dict(state_dict) if state_dict else None
        if self.monitor is not None and self._state:
            self.monitor.load_state_dict(self._state)


__all__ = ["LayerMonitorCallback"]
