"""torchtitan: every steepest recipe as an optimizer of torchtitan's trainer (torchtitan 0.3.0's API).

:class:`SteepestOptimizersContainer` is a subclass of torchtitan's ``OptimizersContainer``; select it
and a recipe by name in the trainer's config with :func:`steepest_optimizer`::

    from steepest.integrations.torchtitan import steepest_optimizer
    config.optimizer = steepest_optimizer("Muon", lr=0.02, weight_decay=0.1, adamw_lr=3e-4)
    # torchtitan builds it as config.optimizer.build(model_parts=model_parts)

Two ways to split the parameters:

* **structural** (default, ``param_groups=None``): :func:`steepest.param_groups` routes each model part
  (hidden matrices in the recipe's geometry; embeddings, the output head, norms and biases on AdamW in the
  same optimizer). ``routing=dict(...)`` is passed to it (e.g. ``dict(split_qkv=True)``).
* **torchtitan's regex groups**: ``param_groups=[ParamGroupConfig(pattern=..., optimizer_name="Muon",
  optimizer_kwargs=dict(lr=0.02)), ParamGroupConfig(pattern=r".*", optimizer_name="AdamW", ...)]`` as
  in torchtitan; the names of :data:`RECIPES` (also spelled ``"steepest.Muon"``, ...) sit beside torchtitan's
  ``Adam``, ``AdamW`` and ``DistMuon``. Constructor keywords of a recipe (``dtype``, ``adamw_lr``,
  ``executor``, ...) go in ``optimizer_factory_kwargs_by_name={"Muon": {...}}``. A steepest group of
  1-D parameters needs ``"algorithm": "adamw"`` in its kwargs (or route it to torchtitan's AdamW).

Every group carries ``param_names`` (canonical FQNs, torchtitan's ``canonical_fqn``), which torchtitan's
flat FQN-keyed optimizer state dict and DCP resharding need, and torchtitan's ``fused``/``foreach`` keys
(accepted and ignored by steepest's step). The executor defaults to ``"auto"``: under FSDP2 (DTensor
parameters on torchtitan's 1-D data-parallel mesh) that is the owner-computes executor on the mesh's
process group (:mod:`steepest.optim.sharded`: each matrix is dualized once, on its owner rank); a 2-D
mesh (HSDP, FSDP x TP) is refused with a message saying what to pass instead.

torchtitan's checkpointer materializes optimizer state before saving or loading by one step with zero
gradients and ``lr = 0`` (``init_optim_state``); every steepest recipe takes that step without moving a
weight (tests/test_torchtitan.py).

``import steepest`` never imports torchtitan; this module does (``tools/setup.sh --with-torchtitan``). It needs
only torchtitan's optimizer components, which import without triton; torchtitan's models (``torchtitan.models``)
import triton, so training them needs a torch build that ships it (CUDA).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torchtitan.components.checkpointer.utils import canonical_fqn
from torchtitan.components.optimizer import OptimizersContainer

import steepest

#: The steepest recipes selectable by name (also as ``"steepest.<name>"``).
RECIPES: dict[str, type] = {
    "Muon": steepest.Muon,
    "SpecGD": steepest.SpecGD,
    "SignSGD": steepest.SignSGD,
    "SchattenDescent": steepest.SchattenDescent,
    "GD": steepest.GD,
    "Adaptive": steepest.Adaptive,
    "SteepestDescent": steepest.SteepestDescent,
}


def _recipe(name: str) -> type | None:
    return RECIPES.get(name[len("steepest.") :] if name.startswith("steepest.") else name)


def build_recipe(cls: type, param_groups: list[dict], **kwargs) -> torch.optim.Optimizer:
    """``cls(param_groups, executor="auto", **kwargs)``: the factory torchtitan calls for a steepest name."""
    kwargs.setdefault("executor", "auto")
    return cls(param_groups, **kwargs)


class SteepestOptimizersContainer(OptimizersContainer):
    """torchtitan's ``OptimizersContainer`` with the steepest recipes (module docstring: the two routings).

    Args:
        config: :class:`SteepestOptimizersContainer.Config` (made by :func:`steepest_optimizer`).
        model_parts: the model parts (one per pipeline stage), as torchtitan passes them.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = steepest_optimizer("Muon", lr=0.02).build(model_parts=[model])
        >>> [type(o).__name__ for o in opt], opt.optimizers[0].param_groups[0]["param_names"]
        (['Muon'], ['0.weight'])
    """

    @dataclass(kw_only=True, slots=True)
    class Config(OptimizersContainer.Config):
        recipe: str = "Muon"
        """Structural routing: the steepest recipe (a name of RECIPES). Unused with regex param_groups."""

        recipe_kwargs: dict[str, Any] = field(default_factory=dict)
        """Structural routing: the recipe's constructor keywords (lr, weight_decay, adamw_lr, dtype, ...)."""

        routing: dict[str, Any] = field(default_factory=dict)
        """Structural routing: keywords of steepest.param_groups (split_qkv, head_modules, hidden, ...)."""

    @staticmethod
    def _resolve_optimizer_factory(name: str):
        cls = _recipe(name)
        if cls is not None:
            return functools.partial(build_recipe, cls)
        return OptimizersContainer._resolve_optimizer_factory(name)

    def __init__(self, config: Config, *, model_parts: list[torch.nn.Module]) -> None:
        if config.param_groups:  # torchtitan's regex groups; steepest names resolve above
            super().__init__(config, model_parts=model_parts)
            return
        cls = _recipe(config.recipe)
        if cls is None:
            raise ValueError(
                f"steepest_optimizer: unknown recipe {config.recipe!r}; choose one of {sorted(RECIPES)} "
                "(or give torchtitan param_groups to mix in its own optimizers)"
            )
        impl = self._build_impl_kwargs(config)
        self.optimizers, self.model_parts = [], model_parts
        all_params: list[torch.nn.Parameter] = []
        for part in model_parts:
            groups = steepest.param_groups(part, **config.routing)
            fqns = {id(p): canonical_fqn(n) for n, p in part.named_parameters()}
            for g in groups:
                g["param_names"] = [fqns[id(p)] for p in g["params"]]
                for k, v in impl.items():
                    g.setdefault(k, v)
                all_params.extend(g["params"])
            self.optimizers.append(build_recipe(cls, groups, **config.recipe_kwargs))
        self._validate_params(all_params)
        self._post_init(all_params)


def steepest_optimizer(
    recipe: str = "Muon",
    *,
    param_groups=None,
    routing: dict | None = None,
    implementation: str = "for-loop",
    **recipe_kwargs,
) -> SteepestOptimizersContainer.Config:
    """The config of a :class:`SteepestOptimizersContainer` running ``recipe`` (a name of :data:`RECIPES`).

    Args:
        recipe: "Muon", "SpecGD", "SignSGD", "SchattenDescent", "GD", "Adaptive" or "SteepestDescent".
        param_groups: None (structural routing by :func:`steepest.param_groups`) or torchtitan
            ``ParamGroupConfig`` entries (regex routing; then ``recipe_kwargs`` are the constructor keywords
            of every steepest factory in them, keyed by their names).
        routing: keywords of :func:`steepest.param_groups` (structural routing only).
        implementation: torchtitan's field; its ``fused``/``foreach`` keys reach the groups and steepest
            ignores them (no fused kernels). torchtitan's AdamW in regex groups reads them.
        recipe_kwargs: the recipe's keywords (``lr``, ``weight_decay``, ``momentum``, ``adamw_lr``, ``dtype``,
            ``executor``, ...).

    Example:
        >>> cfg = steepest_optimizer("SignSGD", lr=1e-3, momentum=0.9)
        >>> cfg.recipe, cfg.recipe_kwargs
        ('SignSGD', {'lr': 0.001, 'momentum': 0.9})
    """
    if _recipe(recipe) is None:
        raise ValueError(f"steepest_optimizer: unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    if param_groups:
        if routing:
            raise ValueError(
                "steepest_optimizer: routing= is for structural routing; with param_groups= the "
                "regex patterns route the parameters"
            )
        names = {pg.optimizer_name for pg in param_groups if _recipe(pg.optimizer_name) is not None}
        return SteepestOptimizersContainer.Config(
            param_groups=list(param_groups),
            implementation=implementation,
            recipe=recipe,
            optimizer_factory_kwargs_by_name={n: dict(recipe_kwargs) for n in names},
        )
    return SteepestOptimizersContainer.Config(
        recipe=recipe, recipe_kwargs=dict(recipe_kwargs), routing=dict(routing or {}), implementation=implementation
    )


__all__ = ["SteepestOptimizersContainer", "steepest_optimizer", "RECIPES", "build_recipe"]
