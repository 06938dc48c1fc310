"""Trainer integrations: Hugging Face ``Trainer`` (:mod:`steepest.integrations.hf`), Lightning
(:mod:`steepest.integrations.lightning`) and torchtitan (:mod:`steepest.integrations.torchtitan`).

Imported on demand only: ``import steepest`` never imports transformers, lightning or torchtitan, and this
package imports none of them until one of its submodules is imported.

Example:
    >>> import steepest.integrations.hf as hf
    >>> # Trainer(model, args, optimizer_cls_and_kwargs=hf.trainer_optimizer(steepest.Muon, lr=0.02), ...)
"""

__all__ = ["hf", "lightning", "torchtitan"]
