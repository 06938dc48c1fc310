"""``package.module:name`` specs of the user's own code (``--task``, ``--optimizers``), imported as ``python -m``
would: the current folder is on the import path, also under the ``steepest`` console script (whose
``sys.path[0]`` is the script's bin folder, not the folder it runs in).

Example:
    >>> factory = import_spec("mytasks:make_task")   # needs mytasks.py in the current folder  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys


class SpecError(LookupError):
    """A ``package.module:name`` spec that is malformed, does not import, or names nothing callable."""


def is_spec(text: str) -> bool:
    """True for text of the form ``package.module:name`` (the user's own code, not a built-in name)."""
    return isinstance(text, str) and ":" in text


def import_spec(spec: str, what: str = "object"):
    """The object ``name`` of module ``package.module`` for ``spec = "package.module:name"``.

    The current folder is tried after ``sys.path`` (``python -m``'s behaviour, for the console script too).
    Raises :class:`SpecError` saying what to fix.
    """
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not all(p.isidentifier() for p in mod_name.split(".")) or not attr.isidentifier():
        raise SpecError(f"{what} {spec!r}: expected 'package.module:name' (e.g. mypkg.tasks:make_task)")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = mod_name.split(".")[0]
        if e.name != top or cwd in sys.path or "" in sys.path:
            raise SpecError(f"cannot import {what} module {mod_name!r} ({e}); is it on PYTHONPATH?") from e
        sys.path.append(cwd)  # python -m puts the current folder on the path; the console script does not
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e2:
            raise SpecError(
                f"cannot import {what} module {mod_name!r} ({e2}); not in the current folder ({cwd}) nor on PYTHONPATH"
            ) from e2
        except SyntaxError as e2:
            raise SpecError(
                f"{what} module {mod_name!r} has a syntax error at {e2.filename}:{e2.lineno}: {e2.msg}"
            ) from e2
        except Exception as e2:
            raise SpecError(f"importing {what} module {mod_name!r} raised {type(e2).__name__}: {e2}") from e2
    except ImportError as e:
        raise SpecError(f"cannot import {what} module {mod_name!r} ({e}); is it on PYTHONPATH?") from e
    except SyntaxError as e:  # the user's module does not parse: say where, not a traceback
        raise SpecError(f"{what} module {mod_name!r} has a syntax error at {e.filename}:{e.lineno}: {e.msg}") from e
    except Exception as e:  # the module raised while it was imported
        raise SpecError(f"importing {what} module {mod_name!r} raised {type(e).__name__}: {e}") from e
    obj = getattr(module, attr, None)
    if obj is None:
        raise SpecError(f"{what} module {mod_name!r} has no callable {attr!r}")
    return obj


def takes_argument(fn, name: str) -> bool:
    """True when callable ``fn`` has a parameter called ``name`` (not just ``**kwargs``)."""
    try:
        return name in inspect.signature(fn).parameters and inspect.signature(fn).parameters[name].kind not in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
    except (TypeError, ValueError):
        return False


__all__ = ["import_spec", "is_spec", "takes_argument", "SpecError"]
