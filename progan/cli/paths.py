"""Path options of the commands: each checked to fit the file system before a command runs, the
ones progan keeps as text (``TextPath``) checked to be UTF-8, and output that cannot be encoded
printed escaped instead of failing."""

from __future__ import annotations

import os
import sys

import click

from progan.errors import ProganError


class TextPath(click.Path):
    """A path that progan writes as text (into config.toml) or hands to TensorBoard, which
    both take UTF-8 only: a name with bytes that are not UTF-8 is refused up front."""


def path_options(ctx: click.Context) -> list[tuple[click.Parameter, str]]:
    """The command's path parameters that were given, with their values."""
    given = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param.type, click.Path) and value is not None:
            given += [(param, str(v)) for v in (value if isinstance(value, tuple) else (value,))]
    return given


def _label(param: click.Parameter) -> str:
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


def check_paths(paths: list[tuple[click.Parameter, str]]) -> None:
    """Every path fits the file system (no name over its 255 bytes), and those stored as text
    (``TextPath``) are UTF-8: each failure is one line naming the option."""
    from progan.fileio import check_path_fits

    for param, value in paths:
        check_path_fits(value, _label(param))
        if isinstance(param.type, TextPath):
            check_utf8(value, _label(param))


def check_utf8(path, label: str) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ProganError(
            f"{label} '{path}': the name holds bytes that are not UTF-8, and progan keeps this "
            "path as UTF-8 text (config.toml, TensorBoard); rename it or give a UTF-8 path (a "
            "symbolic link to it)"
        ) from None


def too_long(e: OSError, paths: list[tuple[click.Parameter, str]]) -> str:
    """The message for ENAMETOOLONG: the option whose path the name was made from (the longest
    one it starts with)."""
    name = os.fsdecode(e.filename) if e.filename is not None else "?"
    sources = [
        (len(value), param, value) for param, value in paths if value and name.startswith(value)
    ]
    if sources:
        _, param, value = max(sources, key=lambda s: s[0])
        return (
            f"{_label(param)} '{value}': a file name progan makes from it is longer than "
            f"the file system allows ('{name}'); choose a shorter name"
        )
    return f"a file name is longer than the file system allows ('{name}'); choose shorter paths"


def printable_streams() -> None:
    """Print what the terminal's encoding cannot hold as backslash escapes instead of failing.

    A path with bytes that are not UTF-8 reaches Python as text with surrogates, and a name
    outside the locale's charset cannot be encoded either: printing either (a log line naming
    the run directory) would end the command with UnicodeEncodeError. Paths are escaped as
    ``prepare.printable`` escapes file names.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
