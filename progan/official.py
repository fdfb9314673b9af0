"""The official ProGAN networks (tkarras/progressive_growing_of_gans) in progan's terms.

Three pieces, each a plain function:

- ``generator_state`` / ``discriminator_state``: official variables (``4x4/Dense/weight``,
  ``32x32/Conv0_up/weight``, ``ToRGB_lod0/bias``, ...) -> progan state_dicts. TF stores conv
  kernels ``[k, k, in, out]``; the fused upscale conv (``Conv0_up``) is stored for
  ``conv2d_transpose`` as ``[k, k, out, in]`` and equals nearest-upsample + conv with that kernel
  transposed and flipped; the fused downscale conv (``Conv1_down``) equals conv + 2x2 average
  before bias and activation (progan's ``d_pool = "before_bias"``).
- ``load_official_pickle``: reads an official network pickle without TensorFlow and without running
  anything it carries (see ``_SafeUnpickler``).
- ``import_official``: writes a progan run directory (config.toml + a checkpoint) from a pickle.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from progan.errors import ProganError

Transform = Callable[[np.ndarray], np.ndarray]


def _conv(w: np.ndarray) -> np.ndarray:  # [k, k, in, out] -> [out, in, k, k]
    return w.transpose(3, 2, 0, 1)


def _conv_transposed(
    w: np.ndarray,
) -> np.ndarray:  # conv2d_transpose's [k, k, out, in] -> [out, in, k, k], flipped
    return w.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


def _dense(w: np.ndarray) -> np.ndarray:  # [in, out] -> [out, in]
    return w.T


def _same(x: np.ndarray) -> np.ndarray:
    return x


def lod_to_stage(lod: float, res_max: int) -> tuple[int, float]:
    """The official level of detail as progan's (resolution, alpha): lod 1.7 at 64 is (32, 0.3)."""
    whole = math.floor(lod)
    return res_max >> whole, 1.0 - (lod - whole)


def stage_to_lod(res: int, alpha: float, res_max: int) -> float:
    return math.log2(res_max // res) + (1.0 - alpha)


def _generator_key(name: str, res_max: int) -> tuple[str, Transform]:
    if m := re.fullmatch(r"ToRGB_lod(\d+)/(weight|bias)", name):
        return f"to_rgb.{res_max >> int(m[1])}.{m[2]}", _conv if m[2] == "weight" else _same
    if name == "4x4/Dense/weight":
        return "input.dense.weight", _dense
    if name == "4x4/Dense/bias":
        return "input.bias", _same
    if m := re.fullmatch(r"4x4/Conv/(weight|bias)", name):
        return f"input.conv.{m[1]}", _conv if m[1] == "weight" else _same
    if m := re.fullmatch(r"(\d+)x\1/(Conv0_up|Conv0|Conv1)/(weight|bias)", name):
        layer = "conv1" if m[2] == "Conv1" else "conv0"
        if m[3] == "bias":
            return f"blocks.{m[1]}.{layer}.bias", _same
        return f"blocks.{m[1]}.{layer}.weight", _conv_transposed if m[2] == "Conv0_up" else _conv
    raise ProganError(f"unknown variable '{name}' in the official generator")


def _discriminator_key(name: str, res_max: int) -> tuple[str, Transform]:
    if m := re.fullmatch(r"FromRGB_lod(\d+)/(weight|bias)", name):
        return f"from_rgb.{res_max >> int(m[1])}.{m[2]}", _conv if m[2] == "weight" else _same
    if m := re.fullmatch(r"4x4/(Conv|Dense0|Dense1)/(weight|bias)", name):
        layer = {"Conv": "conv", "Dense0": "dense0", "Dense1": "dense1"}[m[1]]
        return f"output.{layer}.{m[2]}", _same if m[
            2
        ] == "bias" else _conv if layer == "conv" else _dense
    if m := re.fullmatch(r"(\d+)x\1/(Conv0|Conv1_down|Conv1)/(weight|bias)", name):
        layer = "conv0" if m[2] == "Conv0" else "conv1"
        return f"blocks.{m[1]}.{layer}.{m[3]}", _conv if m[3] == "weight" else _same
    raise ProganError(f"unknown variable '{name}' in the official discriminator")


def _to_state(variables: dict[str, np.ndarray], key_of, res_max: int) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in variables.items():
        if name == "lod":
            continue
        key, transform = key_of(name, res_max)
        state[key] = torch.from_numpy(
            np.array(transform(np.asarray(value, dtype=np.float32)), order="C")
        )
    return state


def generator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``G_paper`` variables (by their names in the network) as a progan Generator state_dict."""
    return _to_state(variables, _generator_key, res_max)


def discriminator_state(variables: dict[str, np.ndarray], res_max: int) -> dict[str, torch.Tensor]:
    """Official ``D_paper`` variables as a progan Discriminator state_dict (a conditional one's is "acgan")."""
    return _to_state(variables, _discriminator_key, res_max)


# --- reading an official pickle without running it ----------------------------------------------


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


def _resolve(obj: Any) -> Any:
    """The loaded structure with array stand-ins replaced by arrays."""
    if isinstance(obj, _ArrayStub):
        if not hasattr(obj, "array"):
            raise ValueError("array without data")
        return obj.array
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, OfficialNetwork):
        obj.state = _resolve(obj.state)
    return obj


def read_official_pickle(path: str | Path) -> tuple[dict, dict, dict]:
    """The pickled states (dicts) of the networks (G, D, Gs) in an official ProGAN or StyleGAN pickle,
    read without running anything: their ``build_module_src`` is never executed (nor used)."""
    path = Path(path)
    if not path.is_file():
        raise ProganError(f"network pickle '{path}' not found")
    try:
        with open(path, "rb") as f:
            loaded = _resolve(_SafeUnpickler(f, encoding="latin1").load())
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


def load_official_pickle(path: str | Path) -> dict[str, dict[str, Any]]:
    """The states of G, D and Gs in an official ProGAN network pickle, read without running anything.

    Each state holds ``static_kwargs`` (the build options), ``build_func_name`` and ``variables``
    (name -> array).
    """
    return _progan_networks(path, read_official_pickle(path))


def _progan_networks(path, states) -> dict[str, dict[str, Any]]:
    return checked_networks(path, states, ("G_paper", "D_paper"), (2,), own_variables)


def checked_networks(path, states, funcs: tuple[str, str], versions: tuple[int, ...],
                     variables) -> dict[str, dict[str, Any]]:
    """G, D and Gs of an official pickle's ``states``: each checked to be a network of ``versions``
    built by ``funcs`` (G's, D's), with its ``static_kwargs`` and ``variables(path, key, state)``."""
    nets = {}
    for key, s, func in zip(("G", "D", "Gs"), states, (funcs[0], funcs[1], funcs[0])):
        if s.get("version") not in versions or s.get("build_func_name") != func:
            raise ProganError(
                f"'{path}': {key} is not an official {func} network (version {s.get('version')!r}, "
                f"built by {s.get('build_func_name')!r}); only {' / '.join(funcs)} networks are read"
            )
        nets[key] = {"static_kwargs": static_kwargs(path, key, s), "variables": variables(path, key, s)}
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


# --- a progan run from an official pickle ---------------------------------------------------------

# Build options of G_paper / D_paper that progan's networks implement only at these values.
_FIXED_OPTIONS = {
    "num_channels": 3,
    "fmap_decay": 1.0,
    "normalize_latents": True,
    "use_wscale": True,
    "use_pixelnorm": True,
    "pixelnorm_epsilon": 1e-8,
    "use_leakyrelu": True,
}
# The official defaults of the options that progan's config carries.
_DEFAULTS = {
    "resolution": 32,
    "fmap_base": 8192,
    "fmap_max": 512,
    "mbstd_group_size": 4,
    "fused_scale": True,
}


def config_from_official(nets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """progan config keys for the networks an official pickle holds (from their static_kwargs)."""
    g_kw, d_kw = nets["G"]["static_kwargs"], nets["D"]["static_kwargs"]
    for kw in (g_kw, d_kw):
        for key, value in _FIXED_OPTIONS.items():
            if key in kw and kw[key] != value:
                raise ProganError(
                    f"the official network was built with {key} = {kw[key]!r}; progan's networks "
                    f"implement only {key} = {value!r}"
                )
    opt = lambda kw, k: kw.get(k, _DEFAULTS[k])  # noqa: E731
    if any(opt(g_kw, k) != opt(d_kw, k) for k in ("resolution", "fmap_base", "fmap_max")):
        raise ProganError("the official G and D differ in resolution or feature maps")
    mbstd = int(opt(d_kw, "mbstd_group_size"))
    label_size = int(g_kw.get("label_size", 0))
    return {
        "conditional": label_size > 0,
        "conditioning": "acgan",
        "res_max": int(opt(g_kw, "resolution")),
        "fmap_base": int(opt(g_kw, "fmap_base")),
        "fmap_max": int(opt(g_kw, "fmap_max")),
        "latent_dim": int(np.shape(nets["G"]["variables"]["4x4/Dense/weight"])[0]) - label_size,
        "mbstd_group": mbstd if mbstd > 1 else 0,
        "d_pool": "before_bias" if opt(d_kw, "fused_scale") else "after_act",
    }


def check_fits(net: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise a one-line ProganError unless ``state`` has exactly the network's keys and shapes."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [k for k in want.keys() & got.keys() if want[k] != got[k]]
    if missing or extra or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {extra[:3]}"
            if extra
            else f"{wrong[0]} is {got[wrong[0]]}, progan expects {want[wrong[0]]}"
        )
        raise ProganError(f"the official {what} does not map onto progan's networks: {detail}")


def import_official(pkl: str | Path, run_dir: str | Path, log=print) -> Path:
    """Write a progan run directory (config.toml, one checkpoint) holding an official pickle's G, D, Gs.

    Gs becomes G_ema. The checkpoint sits in the schedule where the networks' ``lod`` says they
    were (the start of the last stabilize phase for a finished network), so ``progan generate``
    samples them as they are and ``progan train --resume --data STORE`` fine-tunes them.
    """
    from progan import checkpoint as ckpt
    from progan.config import from_dict, to_toml
    from progan.fileio import atomic_path
    from progan.arch import build_networks
    from progan.optim import TFAdam
    from progan.schedule import phases

    from progan.runlock import check_unlocked, run_lock

    run_dir = Path(run_dir)
    _check_new_run(run_dir)
    check_unlocked(run_dir)
    states = read_official_pickle(pkl)
    if states[0].get("build_func_name") == "G_style":
        from progan import official_stylegan

        nets = official_stylegan.stylegan_networks(pkl, states)
        cfg = from_dict(official_stylegan.config_from_official(nets))
        to_g, to_d = official_stylegan.generator_state, discriminator_state
    else:
        nets = _progan_networks(pkl, states)
        cfg = from_dict(config_from_official(nets))
        to_g, to_d = generator_state, discriminator_state
    res, alpha, lod = _stage_of(pkl, nets["Gs"]["variables"].get("lod", 0.0), cfg)
    _check_finite(pkl, nets)
    num_classes = int(nets["G"]["static_kwargs"].get("label_size", 0))
    G, D = build_networks(cfg, num_classes)
    G_ema, _ = build_networks(cfg, num_classes)
    for net, key, to_state, what in (
        (G, "G", to_g, "generator G"),
        (D, "D", to_d, "discriminator D"),
        (G_ema, "Gs", to_g, "generator Gs"),
    ):
        state = to_state(nets[key]["variables"], cfg.res_max)
        check_fits(net, state, what)
        net.load_state_dict(state)
    plan = phases(cfg)
    index, phase = next(
        (i, p) for i, p in enumerate(plan) if p.res == res and (p.kind == "fade") == (alpha < 1)
    )
    images_shown = phase.start + (round(alpha * (phase.end - phase.start)) if alpha < 1 else 0)

    def fresh(net: torch.nn.Module) -> dict:  # optimizer state of a new phase: empty
        return TFAdam(net.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps).state_dict()

    state = {
        "images_shown": images_shown,
        # Steps are counted for the EMA ramp-up only: past it, G_ema continues from Gs.
        "step": images_shown // cfg.batch_for(res),
        "res": res,
        "alpha": alpha,
        "opt_phase": index,
        "num_classes": num_classes,
        "config": cfg.to_dict(),
        "G": G.state_dict(),
        "D": D.state_dict(),
        "G_ema": G_ema.state_dict(),
        "opt_G": fresh(G),
        "opt_D": fresh(D),
    }
    with run_lock(run_dir):  # one writer per run directory, as for training
        _check_new_run(run_dir)
        with atomic_path(run_dir / "config.toml") as tmp:
            tmp.write_text(to_toml(cfg))
        path = ckpt.save_checkpoint(run_dir, state)
    log(
        f"imported '{pkl}' ({cfg.res_max}x{cfg.res_max}, lod {lod:g}: {res}x{res}, alpha {alpha:g}) as {path}"
    )
    return path


def _check_new_run(run_dir: Path) -> None:
    from progan import checkpoint as ckpt

    if ckpt.list_checkpoints(run_dir):
        raise ProganError(
            f"run directory '{run_dir}' already holds checkpoints; import into a new --run-dir"
        )


def _check_finite(pkl, nets: dict[str, dict[str, Any]]) -> None:
    """Refuse networks with a NaN or infinite weight: every image they draw would be NaN (black)."""
    for key in ("G", "D", "Gs"):
        for name, value in nets[key]["variables"].items():
            a = np.asarray(value)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise ProganError(
                    f"'{pkl}': {key}'s {name} holds {int((~np.isfinite(a)).sum())} NaN or infinite "
                    f"values (of {a.size}): the network is damaged; nothing was imported"
                )


def _stage_of(pkl, lod_value: Any, cfg) -> tuple[int, float, float]:
    """(resolution, alpha, lod) of the network's ``lod``, which must be a number from 0 (trained to
    res_max) to log2(res_max / res_start) (the first resolution)."""
    top = int(math.log2(cfg.res_max // cfg.res_start))
    try:
        lod = float(np.asarray(lod_value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        lod = math.nan
    if not (math.isfinite(lod) and 0 <= lod <= top):
        raise ProganError(
            f"'{pkl}': its lod is {np.asarray(lod_value).tolist()!r}, but the lod of a "
            f"{cfg.res_max}x{cfg.res_max} network is a number from 0 ({cfg.res_max}x{cfg.res_max}) "
            f"to {top} ({cfg.res_start}x{cfg.res_start}): the pickle is damaged; nothing was imported"
        )
    res, alpha = lod_to_stage(lod, cfg.res_max)
    return res, alpha, lod
