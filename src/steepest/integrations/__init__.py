"""Trainer integrations: Hugging Face ``Trainer`` (:mod:`steepest.integrations.hf`) and Lightning
(:mod:`steepest.integrations.lightning`).

Imported on demand only: ``import steepest`` never imports transformers or lightning, and this package
imports neither until one of its submodules is imported.

Example:
    >>> import steepest.integrations.hf as hf
    >>> # Trainer(model, args, optimizer_cls_and_kwargs=hf.trainer_optimizer(steepest.Muon, lr=0.02), ...)
"""

__all__ = ["hf", "lightning"]
