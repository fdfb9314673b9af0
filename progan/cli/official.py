"""``progan import-official``: an official ProGAN, StyleGAN or StyleGAN2 pickle as a progan run."""

from __future__ import annotations

import click

from progan.cli.paths import TextPath


@click.command("import-official")
@click.argument("network", type=click.Path(path_type=str), metavar="NETWORK.pkl")
@click.option(
    "--run-dir", required=True, type=TextPath(file_okay=False), help="New run directory to write."
)
def import_official_cmd(network, run_dir):
    """Turn an official network pickle into a progan run directory: ProGAN's or StyleGAN's
    (TensorFlow: G, D, Gs), or StyleGAN2's (NVlabs/stylegan2's TensorFlow pickles; StyleGAN2-ADA's
    and StyleGAN3's PyTorch snapshots: G, D, G_ema).

    The pickle is read without TensorFlow and without running anything it carries (a PyTorch
    snapshot's embedded source stays text): only tensors, numpy arrays, plain containers and the
    network states are admitted, anything else is refused. Gs becomes G_ema; `progan generate
    RUN_DIR` samples it and `progan train --run-dir RUN_DIR --resume --data STORE` fine-tunes it.
    """
    from progan.official.importer import import_official

    import_official(network, run_dir, log=click.echo)
