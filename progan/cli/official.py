"""``progan import-official``: an official ProGAN or StyleGAN pickle as a progan run directory."""

from __future__ import annotations

import click


@click.command("import-official")
@click.argument("network", type=click.Path(path_type=str), metavar="NETWORK.pkl")
@click.option(
    "--run-dir", required=True, type=click.Path(file_okay=False), help="New run directory to write."
)
def import_official_cmd(network, run_dir):
    """Turn an official ProGAN or StyleGAN network pickle (G, D, Gs) into a progan run directory.

    The pickle is read without TensorFlow and without running anything it carries: only numpy
    arrays, plain containers and the network states are admitted, anything else is refused.
    Gs becomes G_ema; `progan generate RUN_DIR` samples it and `progan train --run-dir RUN_DIR
    --resume --data STORE` fine-tunes it.
    """
    from progan.official.importer import import_official

    import_official(network, run_dir, log=click.echo)
