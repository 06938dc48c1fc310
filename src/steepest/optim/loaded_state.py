"""A loaded ``state_dict`` checked like the constructor's arguments, before anything is loaded.

:meth:`steepest.optim.steepest.SteepestDescent.load_state_dict` calls :func:`checked_state_dict`: every
group's settings are validated by :func:`steepest.optim.settings.build` (the one place for the limits), the
settings that define the step (:data:`GEOMETRY_KEYS`) must equal this optimizer's, and every state tensor
must have its parameter's shape, a floating dtype and finite values. Any failure raises
:class:`~steepest.optim.settings.SettingsError` naming the group, the parameter and the key, and ends with
"nothing was loaded".

Example:
    >>> import torch, steepest
    >>> opt = steepest.Muon([torch.nn.Parameter(torch.zeros(4, 4))], lr=0.02)
    >>> sd = opt.state_dict()
    >>> sd["param_groups"][0]["norm"] = "linf"
    >>> checked_state_dict(opt, sd)
    Traceback (most recent call last):
    ...
    steepest.optim.settings.SettingsError: state_dict param_groups[0] has norm='linf' but this optimizer's has norm='spectral': it was saved by a different optimizer or routing. Build the same optimizer (recipe, norm, param_groups) that saved it; nothing was loaded
"""

from __future__ import annotations

import math

import torch

from steepest.optim.settings import SettingsError, build

#: Group settings that define what a step is: a state_dict saved with other values would silently
#: change the optimizer (a SignSGD taking spectral steps), so loading one is an error.
GEOMETRY_KEYS = ("algorithm", "norm", "p", "power", "tensor_mode", "transposed", "row_blocks")
#: Per-parameter state tensors that have the parameter's shape.
SHAPED_STATE = ("momentum_buffer", "exp_avg", "exp_avg_sq", "prev_grad")
#: Per-parameter state that must come together (AdamW's moments with their step count).
TOGETHER = (("step", "exp_avg", "exp_avg_sq"),)


def _refuse(msg: str) -> SettingsError:
    return SettingsError(f"{msg}; nothing was loaded")


def _check_tensor(key: str, v, p: torch.Tensor, who: str) -> None:
    if not torch.is_tensor(v):
        raise _refuse(f"state_dict holds {key}={type(v).__name__} for {who}, expected a tensor")
    if tuple(v.shape) != tuple(p.shape):
        raise _refuse(
            f"state_dict holds {key} of shape {tuple(v.shape)} for {who}: it was saved for a model with other shapes"
        )
    if not v.is_floating_point():
        raise _refuse(f"state_dict holds {key} of dtype {v.dtype} for {who}, expected a floating dtype")
    local = v.to_local() if hasattr(v, "to_local") else v
    if local.numel() and not bool(torch.isfinite(local).all()):
        raise _refuse(f"state_dict holds a non-finite {key} (NaN or Inf) for {who}")


def _check_step(v, who: str) -> None:
    x = float(v) if torch.is_tensor(v) and v.numel() == 1 else v
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0 or x != int(x):
        raise _refuse(f"state_dict holds step={v!r} for {who}, expected a whole number >= 0")


def checked_state_dict(opt, state_dict) -> dict:
    """``state_dict`` validated for ``opt`` (a SteepestDescent) like its constructor's arguments.

    Raises :class:`SettingsError` naming the group, the parameter and the key, before anything is
    loaded; returns a state_dict whose groups have every key (missing ones from ``opt.defaults``,
    today's defaults). The chooser, if any, checks its own state (``chooser.check_state``).
    """
    if (
        not isinstance(state_dict, dict)
        or not isinstance(state_dict.get("param_groups"), list)
        or not isinstance(state_dict.get("state"), dict)
    ):
        raise _refuse(
            "state_dict must be a dict with 'state' (a dict) and 'param_groups' (a list), as "
            "optimizer.state_dict() returns"
        )
    groups, state = state_dict["param_groups"], state_dict["state"]
    if len(groups) != len(opt.param_groups):
        raise _refuse(f"state_dict has {len(groups)} parameter groups, this optimizer has {len(opt.param_groups)}")
    filled_groups = []
    for gi, (saved, cur) in enumerate(zip(groups, opt.param_groups)):
        if not isinstance(saved, dict) or len(saved.get("params", ())) != len(cur["params"]):
            raise _refuse(
                f"state_dict param_groups[{gi}] does not have this optimizer's {len(cur['params'])} parameters"
            )
        for key in GEOMETRY_KEYS:
            if key in saved and key in cur and saved[key] != cur[key]:
                raise _refuse(
                    f"state_dict param_groups[{gi}] has {key}={saved[key]!r} but this optimizer's has "
                    f"{key}={cur[key]!r}: it was saved by a different optimizer or routing. Build the same "
                    "optimizer (recipe, norm, param_groups) that saved it"
                )
        filled = {
            **{k: cur.get(k, v) for k, v in opt.defaults.items() if k in GEOMETRY_KEYS},
            **{k: v for k, v in opt.defaults.items() if k not in GEOMETRY_KEYS},
            **saved,
        }
        try:
            built = build(
                dict(filled, params=cur["params"]),
                gi,
                candidates=opt._candidates(),
                nesterov_needs_momentum=getattr(opt, "_nesterov_needs_momentum", True),
            )
        except SettingsError as e:
            raise _refuse(f"state_dict: {e}") from None
        filled_groups.append(filled)
        for j, idx in enumerate(saved["params"]):
            st = state.get(idx)
            if st is None:
                continue
            who = opt._name(gi, j)
            if not isinstance(st, dict):
                raise _refuse(f"state_dict holds {type(st).__name__} as the state of {who}, expected a dict")
            p = cur["params"][j]
            for key, v in st.items():
                if key in SHAPED_STATE:
                    _check_tensor(key, v, p, who)
                elif key == "step":
                    _check_step(v, who)
            for keys in TOGETHER if built.adamw else ():
                have = [k for k in keys if k in st]
                if have and len(have) != len(keys):
                    missing = next(k for k in keys if k not in st)
                    raise _refuse(f"state_dict holds {', '.join(have)} but no {missing!r} for {who}")
    if getattr(opt, "chooser", None) is not None:
        try:
            opt.chooser.check_state(opt, state_dict)
        except (ValueError, KeyError, TypeError) as e:
            raise _refuse(f"state_dict: {e}") from None
    return dict(state_dict, param_groups=filled_groups)


__all__ = ["checked_state_dict", "GEOMETRY_KEYS", "SHAPED_STATE", "TOGETHER"]
