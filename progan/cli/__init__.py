"""The ``progan`` command: thin click wrappers that validate options and call library functions.

One module per group of commands: ``store`` (prepare-lmdb, info), ``train``, ``evaluate``
(generate, fid, swd, metrics) and ``official`` (import-official). Every command turns a
``ProganError`` into a one-line message and a non-zero exit; a traceback means a bug. The command
modules import click only: each command imports the library it runs when it runs.
"""

from __future__ import annotations

import functools
import sys

import click

from progan.cli import evaluate, official, store, train
from progan.errors import ProganError


def _user_errors(fn):
    """Print ProganError (and Ctrl-C) as one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ProganError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan")
def main():
    """Progressive Growing of GANs: prepare image stores, train, generate, evaluate."""


COMMANDS = (
    store.prepare_lmdb_cmd,
    store.info_cmd,
    train.train,
    evaluate.generate,
    official.import_official_cmd,
    evaluate.fid_cmd,
    evaluate.swd_cmd,
    evaluate.metrics_cmd,
)
for _command in COMMANDS:
    _command.callback = _user_errors(_command.callback)
    main.add_command(_command)
