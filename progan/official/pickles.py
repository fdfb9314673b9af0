"""Official network pickles (ProGAN's ``tfutil.Network``, StyleGAN's ``dnnlib`` networks) read
without TensorFlow and without running anything they carry (see ``_SafeUnpickler``): the pickled
states of G, D and Gs, and the checks every family's reader makes of them (``checked_networks``).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from progan.errors import ProganError


class OfficialNetwork:
    """Stands in for ``tfutil.Network``: keeps the pickled state (a dict) and never runs its source."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError("a network's state is not a dict")
        self.state = state


class _Refused(ProganError):
    pass


class _ArrayStub:
    """What ``numpy.core.multiarray._reconstruct`` would make: the array's bytes arrive with BUILD."""

    def __setstate__(self, state: Any) -> None:
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (None, *state)
        if not isinstance(dtype, _DType) or not isinstance(raw, (bytes, bytearray)):
            raise ValueError("unexpected array state")
        self.array = _array_from_bytes(raw, dtype.dtype, shape, "F" if fortran else "C")


class _DType:
    """A numpy dtype restricted to booleans and numbers (object and structured dtypes are refused)."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True):
        if not isinstance(name, str) or not re.fullmatch(r"[<>|=]?[biufc]\d{1,2}", name):
            raise _Refused(f"array of dtype {name!r}: only numeric arrays are read")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise ValueError("unexpected dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


_NDARRAY = object()  # stands for numpy.ndarray, the only class _reconstruct may be asked for


def _array_from_bytes(raw: bytes, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError("unexpected array shape")
    return (
        np.frombuffer(bytes(raw), dtype=dtype)
        .reshape(shape, order=order)
        .astype(dtype.newbyteorder("="))
    )


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NDARRAY:
        raise _Refused("an array of a class other than numpy.ndarray")
    return _ArrayStub()


def _scalar(dtype: Any, raw: Any) -> Any:
    if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
        raise ValueError("unexpected scalar")
    return _array_from_bytes(raw, dtype.dtype, (), "C")[()]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if (
        not isinstance(dtype, _DType)
        or not isinstance(buf, (bytes, bytearray))
        or order not in ("C", "F")
    ):
        raise ValueError("unexpected array")
    return _array_from_bytes(buf, dtype.dtype, shape, order)


def _latin1(
    text: Any, encoding: Any = "latin1"
) -> bytes:  # protocol-2 bytes: _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise ValueError("unexpected _codecs.encode call")
    return text.encode("latin1")


_ALLOWED = {
    ("tfutil", "Network"): OfficialNetwork,  # ProGAN's pickles
    ("dnnlib.tflib.network", "Network"): OfficialNetwork,  # StyleGAN's
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1,
    ("collections", "OrderedDict"): dict,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED |= {
        (f"{_core}.multiarray", "_reconstruct"): _reconstruct,
        (f"{_core}.multiarray", "scalar"): _scalar,
        (f"{_core}.numeric", "_frombuffer"): _frombuffer,
    }


def pickle_strings(path: str | Path, limit: int = 1 << 20) -> list[str]:
    """The string arguments of a pickle's opcodes in its first ``limit`` bytes, up to its STOP
    (module and class names, dict keys): how a reader tells the families apart without unpickling
    anything. A pickle cut at ``limit`` or a file that is no pickle gives what was read."""
    with open(path, "rb") as f:
        head = f.read(limit)
    out = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name == "STOP":
                break
            if isinstance(arg, str):
                out.append(arg)
    except Exception:  # cut, or not a pickle: the readers decide
        pass
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Admits numpy arrays of numbers, plain containers and a stand-in for ``tfutil.Network``.

    ``find_class`` is the only way a pickle reaches a callable: anything not in ``_ALLOWED`` is
    refused when the pickle names it, before it could be called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _Refused(
            f"it references {module}.{name}, which an official network pickle does not contain"
        )


def resolve_arrays(obj: Any, records: tuple[type, ...] = (OfficialNetwork,)) -> Any:
    """The loaded structure with array stand-ins replaced by arrays, inside containers and the
    ``state`` of the reader's network records (``records``: this module's ``OfficialNetwork``, or
    ``torch_pickles``' persistent objects)."""
    if isinstance(obj, _ArrayStub):
        if not hasattr(obj, "array"):
            raise ValueError("array without data")
        return obj.array
    if isinstance(obj, (list, tuple)):
        return type(obj)(resolve_arrays(x, records) for x in obj)
    if isinstance(obj, dict):
        return {k: resolve_arrays(v, records) for k, v in obj.items()}
    if isinstance(obj, records):
        obj.state = resolve_arrays(obj.state, records)
    return obj


def read_official_pickle(path: str | Path) -> tuple[dict, dict, dict]:
    """The pickled states (dicts) of the networks (G, D, Gs) in an official ProGAN or StyleGAN pickle,
    read without running anything: their ``build_module_src`` is never executed (nor used)."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"network pickle '{path}' not found")
    try:
        with open(path, "rb") as f:
            loaded = resolve_arrays(_SafeUnpickler(f, encoding="latin1").load())
    except _Refused as e:
        raise ProganError(f"refused '{path}': {e}; nothing in it was run") from None
    except Exception as e:  # a truncated or foreign file raises many types
        raise ProganError(
            f"'{path}' is not an official network pickle ({type(e).__name__}: {str(e)[:100]})"
        ) from None
    if not (
        isinstance(loaded, tuple)
        and len(loaded) == 3
        and all(isinstance(n, OfficialNetwork) for n in loaded)
    ):
        raise ProganError(
            f"'{path}' is not an official network pickle (expected the tuple (G, D, Gs))"
        )
    return tuple(net.state for net in loaded)


def checked_networks(
    path, states, funcs: tuple[str, str], versions: tuple[int, ...], variables
) -> dict[str, dict[str, Any]]:
    """G, D and Gs of an official pickle's ``states``: each checked to be a network of ``versions``
    built by ``funcs`` (G's, D's), with its ``static_kwargs`` and ``variables(path, key, state)``."""
    nets = {}
    for key, s, func in zip(("G", "D", "Gs"), states, (funcs[0], funcs[1], funcs[0])):
        if s.get("version") not in versions or s.get("build_func_name") != func:
            raise ProganError(
                f"'{path}': {key} is not an official {func} network (version {s.get('version')!r}, "
                f"built by {s.get('build_func_name')!r}); only {' / '.join(funcs)} networks are read"
            )
        nets[key] = {
            "static_kwargs": static_kwargs(path, key, s),
            "variables": variables(path, key, s),
        }
    # Gs is a copy of G: a shape they disagree on is named for both, since the config is read from G.
    g, gs = nets["G"]["variables"], nets["Gs"]["variables"]
    for name in g:
        if name in gs and np.shape(g[name]) != np.shape(gs[name]):
            raise ProganError(
                f"'{path}': G and Gs differ: {name} is {np.shape(g[name])} in G, "
                f"{np.shape(gs[name])} in Gs (an official Gs is a copy of G: the pickle is damaged)"
            )
    return nets


def own_variables(path, key: str, state: dict) -> dict[str, Any]:
    """A pickled network's own variables (name -> array), checked to be a list of pairs."""
    variables = state.get("variables")
    if not isinstance(variables, list) or not all(
        isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in variables
    ):
        raise ProganError(f"'{path}': {key} has no variable list")
    return dict(variables)


def static_kwargs(path, key: str, state: dict) -> dict[str, Any]:
    if not isinstance(state.get("static_kwargs"), dict):
        raise ProganError(f"'{path}': {key} has no static_kwargs")
    return state["static_kwargs"]
