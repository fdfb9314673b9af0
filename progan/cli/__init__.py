"""The ``progan`` command: thin click wrappers that validate options and call library functions.

One module per group of commands: ``store`` (prepare-lmdb, info), ``train``, ``evaluate``
(generate, fid, swd, metrics), ``official`` (import-official) and ``media`` (project, video);
``paths`` checks their path
options (length, UTF-8) before a command runs. Every command turns a
``ProganError`` into a one-line message and a non-zero exit; a traceback means a bug. The command
modules import click only: each command imports the library it runs when it runs.
"""

from __future__ import annotations

import errno
import functools
import sys

import click

from progan.cli import evaluate, media, official, store, train
from progan.cli.paths import check_paths, path_options, printable_streams, too_long
from progan.errors import ProganError


def _user_errors(fn):
    """Print ProganError (and Ctrl-C) as one line instead of a traceback; check every path
    option first (``paths.check_paths``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        paths = path_options(click.get_current_context())
        try:
            check_paths(paths)
            return fn(*args, **kwargs)
        except ProganError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # a name made from a path option (a temporary's) can still be too long
            if e.errno != errno.ENAMETOOLONG:
                raise
            click.echo(f"error: {too_long(e, paths)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progan")
def main():
    """Progressive Growing of GANs: prepare image stores, train, generate, evaluate."""
    printable_streams()


COMMANDS = (
    store.prepare_lmdb_cmd,
    store.info_cmd,
    train.train,
    evaluate.generate,
    official.import_official_cmd,
    evaluate.fid_cmd,
    evaluate.swd_cmd,
    evaluate.metrics_cmd,
    media.project_cmd,
    media.video_cmd,
)
for _command in COMMANDS:
    _command.callback = _user_errors(_command.callback)
    main.add_command(_command)
