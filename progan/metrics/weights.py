"""Say in one sentence why a file given as network weights could not be read.

PyTorch's own errors for a file that is not weights are an internal zip-reader message, a bare key
(``'101'`` for a text file), an empty string (an empty file) or a paragraph about ``weights_only``.
``file_kind`` looks at the file's header instead, and ``what_it_is`` turns that into a clause.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

__all__ = ["file_kind", "what_it_is"]


def file_kind(path: Path) -> str:
    """``empty``, ``unreadable``, ``torchscript``, ``torch`` (a torch.save zip), ``zip`` (another
    zip archive), ``pickle`` (a legacy torch.save file), ``text`` or ``other``."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return "unreadable"
    if not head:
        return "empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (OSError, zipfile.BadZipFile):
            return "zip"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch" if any(n.endswith("/data.pkl") for n in names) else "zip"
    if head[:1] == b"\x80":
        return "pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "other"
    return "text" if all(c.isprintable() or c in "\t\r\n" for c in text) else "other"


def _cause(error: BaseException) -> str:
    if isinstance(error, pickle.UnpicklingError) and "weights_only" in str(error):
        return "it holds objects other than tensors, which are not loaded (weights_only=True)"
    line = (str(error).strip().splitlines() or [""])[0][:160]
    return line or type(error).__name__


def what_it_is(path: Path, error: BaseException, torchscript: bool = False) -> str:
    """Why ``path`` is not the weights asked for (``torchscript``: a TorchScript file), as a clause:
    what the file is, from its header, or else the first line of ``error``."""
    kind = file_kind(path)
    if kind == "empty":
        return "the file is empty"
    if kind == "unreadable":
        return f"it cannot be read ({_cause(error)})"
    if kind == "text":
        return "it is a text file, not a PyTorch file"
    if kind == "zip":
        return "it is a zip archive but not a PyTorch file"
    if kind == "other":
        return "it is not a PyTorch file (neither a zip archive nor a pickle; truncated?)"
    if torchscript and kind in ("torch", "pickle"):
        return "it is a torch.save file, not TorchScript (torch.jit.save)"
    return _cause(error)
