"""Network pickles of the official PyTorch code (StyleGAN2-ADA, StyleGAN3) read without running
anything they carry.

Those pickles hold ``torch_utils.persistence`` objects: each network's Python source as text
(``module_src``) with its class name and its ``__dict__``; the official loader executes that source.
Here the source stays text, and ``find_class`` admits only what rebuilds tensors and containers
(``_ALLOWED``). A tensor's storage arrives as bytes that the official loader hands to ``torch.load``
unrestricted; those bytes are a pickle too, read here with ``torch.load(weights_only=True)``, which
admits tensors and plain containers only.

``read_torch_pickle`` returns the pickle's dict with each network as a ``TorchNetwork``: its class
name, source text, ``init_kwargs`` and flat ``state_dict``, and the class names of its submodules.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.errors import ProganError
from progan.official import pickles as tf_pickles


class _Refused(ProganError):
    pass


@dataclass
class TorchNetwork:
    """A pickled ``torch.nn.Module`` of the official code, as data."""

    class_name: str
    module_src: str
    init_kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]  # the module's state_dict
    classes: set[str] = field(default_factory=set)  # class names of the module and its submodules


class _Persistent:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` returns here: the meta."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise ValueError("unexpected persistent object")
        src, name, state = meta.get("module_src"), meta.get("class_name"), meta.get("state")
        if not (isinstance(src, str) and isinstance(name, str) and isinstance(state, dict)):
            raise ValueError("unexpected persistent object")
        self.module_src, self.class_name, self.state = src, name, state


class _PlainDict(dict):
    """``dnnlib.EasyDict`` and ``collections.OrderedDict`` as a dict (an EasyDict may carry BUILD)."""

    def __setstate__(self, state: Any) -> None:
        if state not in (None, {}) and not isinstance(state, dict):
            raise ValueError("unexpected dict state")


def _ordered_dict(*args: Any) -> _PlainDict:
    if args and not (len(args) == 1 and isinstance(args[0], (list, tuple))):
        raise ValueError("unexpected OrderedDict arguments")
    return _PlainDict(*args)


def _load_from_bytes(raw: Any) -> torch.UntypedStorage | torch.TypedStorage:
    """A storage's bytes, read by torch's own restricted loader (tensors and containers only)."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError("a storage that is not bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(raw)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it references {found[1]}" if found else "torch's weights-only loader refused it"
        raise _Refused(f"a tensor's storage holds more than numbers ({what})") from None
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise _Refused("a tensor's storage bytes hold something other than a storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise ValueError("a tensor without a storage")
    ints = (offset, *size, *stride)
    if not all(isinstance(i, int) and i >= 0 for i in ints) or len(size) != len(stride):
        raise ValueError("unexpected tensor geometry")
    if hooks:
        raise _Refused("a tensor with backward hooks")
    if isinstance(storage, torch.TypedStorage):
        dtype, storage = storage.dtype, storage._untyped_storage
    else:
        dtype = torch.uint8
    t = torch.empty(0, dtype=dtype).set_(storage)
    return t.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None) -> torch.Tensor:
    if not torch.is_tensor(data) or hooks:
        raise ValueError("unexpected parameter")
    return data


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _Persistent,
    ("collections", "OrderedDict"): _ordered_dict,
    ("dnnlib.util", "EasyDict"): _PlainDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
}
# numpy arrays of numbers and numpy scalars (StyleGAN3 networks keep some as attributes), read
# as the TensorFlow pickles' reader reads them.
_ALLOWED |= {k: v for k, v in tf_pickles._ALLOWED.items() if k[0].startswith(("numpy", "_codecs"))}


class _SafeUnpickler(pickle.Unpickler):
    """``find_class`` is the only way a pickle reaches a callable: what is not in ``_ALLOWED`` is
    refused when the pickle names it, before anything could call it."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _Refused(f"it references {module}.{name}, which progan does not run")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it references an external object")


def is_torch_pickle(path: str | Path) -> bool:
    """Whether a pickle names the official PyTorch code's persistence (read, never run)."""
    return any(s.startswith("torch_utils.persistence") for s in tf_pickles.pickle_strings(path))


def read_torch_pickle(path: str | Path) -> dict[str, Any]:
    """The top-level dict of an official PyTorch network pickle, networks as ``TorchNetwork``."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"network pickle '{path}' not found")
    try:
        with open(path, "rb") as f:
            loaded = tf_pickles.resolve_arrays(_SafeUnpickler(f).load(), (_Persistent,))
    except _Refused as e:
        raise ProganError(f"refused '{path}': {e}; nothing in it was run") from None
    except Exception as e:  # a truncated or foreign file raises many types
        raise ProganError(
            f"'{path}' is not an official PyTorch network pickle "
            f"({type(e).__name__}: {str(e)[:100]})"
        ) from None
    if not isinstance(loaded, dict):
        raise ProganError(
            f"'{path}' is not an official network snapshot (expected the dict of G, D, G_ema)"
        )
    return {k: _network(path, k, v) if isinstance(v, _Persistent) else v for k, v in loaded.items()}


def _network(path: Path, key: str, obj: _Persistent) -> TorchNetwork:
    state: dict[str, torch.Tensor] = {}
    classes: set[str] = set()
    _walk(path, key, obj, "", state, classes)
    kwargs, args = obj.state.get("_init_kwargs"), obj.state.get("_init_args")
    if not isinstance(kwargs, dict) or args not in ((), [], None):
        raise ProganError(
            f"'{path}': {key} has no init_kwargs (or positional init_args, which the official "
            "training loop never passes)"
        )
    return TorchNetwork(obj.class_name, obj.module_src, _plain(kwargs), state, classes)


def _walk(path, key, obj: Any, prefix: str, state: dict, classes: set) -> None:
    """The state_dict of a pickled module: its parameters, persistent buffers and submodules'."""
    if not isinstance(obj, _Persistent):
        raise ProganError(
            f"'{path}': {key}.{prefix.rstrip('.')} is a {type(obj).__name__}, not a module of "
            "the official code"
        )
    classes.add(obj.class_name)
    d = obj.state
    skip = d.get("_non_persistent_buffers_set") or set()
    for table in ("_parameters", "_buffers"):
        for name, value in (d.get(table) or {}).items():
            if value is None or name in skip:
                continue
            if not torch.is_tensor(value):
                raise ProganError(f"'{path}': {key}.{prefix}{name} is not a tensor")
            state[prefix + name] = value
    for name, sub in (d.get("_modules") or {}).items():
        if sub is not None:
            _walk(path, key, sub, f"{prefix}{name}.", state, classes)


def _plain(value: Any) -> Any:
    """Options as plain Python: dicts, lists, numbers and strings (numpy scalars as numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
