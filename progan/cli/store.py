"""``progan prepare-lmdb`` and ``progan info``: build an image store, describe and verify one."""

from __future__ import annotations

import sys

import click

from progan.errors import ProganError


@click.command("prepare-lmdb")
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--res-max", default=1024, show_default=True, help="Largest level (a power of two).")
@click.option("--res-min", default=4, show_default=True, help="Smallest level; must be 4.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Decoding processes [default: CPU count; 0 = in-process].",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Stop after this many stored images."
)
@click.option("--strict", is_flag=True, help="Any skipped file is an error; no store is written.")
@click.option(
    "--labels", is_flag=True, help="Class label = first-level subfolder name (sorted → 0, 1, …)."
)
@click.option(
    "--crop",
    type=click.Choice(["center", "none"]),
    default="center",
    show_default=True,
    help="'center': centre square crop; 'none': keep the whole picture, skip non-square ones.",
)
@click.option(
    "--min-size",
    type=click.IntRange(min=1),
    default=None,
    help="Skip images whose (cropped) side is below this; smaller than --res-max is upscaled.",
)
@click.option(
    "--background",
    default="white",
    show_default=True,
    help="Colour that transparent pixels are composited onto (name or #rrggbb).",
)
@click.option(
    "--lossless",
    type=click.Choice(["png", "webp"]),
    default="png",
    show_default=True,
    help="Encoding of levels ≥ 256 (smaller levels are raw bytes).",
)
@click.option(
    "--max-file-mb",
    default=256,
    show_default=True,
    help="Skip files (and zip entries) larger than this many MiB, unread.",
)
def prepare_lmdb_cmd(
    src,
    out,
    res_max,
    res_min,
    workers,
    limit,
    strict,
    labels,
    crop,
    min_size,
    background,
    lossless,
    max_file_mb,
):
    """Build an LMDB store of every level 4…RES_MAX from a folder (recursive) or .zip of images.

    JPEG, PNG, WebP, BMP, TIFF and GIF (first frame) are read in sorted path order; EXIF
    orientation is applied, transparency is composited onto --background, and lower levels are
    2×2 box averages of the level above. Unreadable files, other extensions, files over
    --max-file-mb, zip entries with '..' paths or bomb-like compression are skipped and listed;
    hidden files and __MACOSX are ignored. Each record's CRC-32 is stored (see `info --verify`).

    The store is built in OUT.partial-<pid> and renamed to OUT only when complete, so an
    interrupted run leaves no OUT; re-running the same command removes stale partial folders and
    starts cleanly.
    """
    from progan.store.writer import prepare_lmdb, printable

    if res_min != 4:
        raise ProganError("--res-min must be 4: the networks start at 4×4, every level is stored")
    s = prepare_lmdb(
        src,
        out,
        res_max=res_max,
        workers=workers,
        limit=limit,
        strict=strict,
        labels=labels,
        crop=crop,
        min_size=min_size,
        background=background,
        lossless=lossless,
        max_file_mb=max_file_mb,
    )
    skipped = sum(s["skipped"].values())
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items()))
    click.echo(
        f"stored {s['stored']} images (levels {s['levels'][0]}–{s['levels'][-1]}) in "
        f"'{printable(s['out'])}' in {s['seconds']:.1f} s; skipped {skipped}"
        + (f" ({reasons})" if reasons else "")
    )
    if s["upscaled"]:
        click.echo(
            f"warning: {s['upscaled']} images were smaller than {res_max} px and were "
            "upscaled (use --min-size to skip small images instead)",
            err=True,
        )


@click.command("info")
@click.argument("store", type=click.Path(path_type=str))
@click.option(
    "--verify",
    is_flag=True,
    help="Read every record and check it against its checksum; list the bad ones.",
)
def info_cmd(store, verify):
    """Print a store's metadata and the bytes each level takes on disk.

    A damaged store (truncated, overwritten pages) is refused in one line. --verify reads
    everything (progress on stderr), names each bad record and exits 1 if there is any.
    """
    from progan.store.reader import level_sizes, read_meta

    meta = read_meta(store)
    sizes = level_sizes(store)
    click.echo(f"store:      {store}")
    click.echo(
        f"format:     version {meta['version']}, {meta.get('channel_order', 'RGB')} "
        f"{meta.get('dtype', 'uint8')} {meta.get('layout', 'CHW')}"
    )
    click.echo(f"images:     {meta['count']}")
    click.echo(f"source:     {meta.get('source', '?')}")
    if meta["num_classes"]:
        click.echo(f"classes:    {meta['num_classes']}: {', '.join(meta['class_names'])}")
    else:
        click.echo("classes:    none (unlabelled)")
    if meta.get("skipped") or meta.get("upscaled"):
        click.echo(
            f"prepare:    skipped {meta.get('skipped', {})}, upscaled {meta.get('upscaled', 0)}"
        )
    if meta["version"] >= 2:
        click.echo("checksums:  CRC-32 per record, checked on every read (all at once: --verify)")
    else:
        click.echo(
            "checksums:  none (format 1 store: reads are not verified; prepare it again "
            "to add them)"
        )
    click.echo("level  encoding       bytes   bytes/image")
    for res in meta["levels"]:
        n = sizes[res]
        per_image = n // max(meta["count"], 1)
        click.echo(f"{res:5d}  {meta['encoding'][str(res)]:8s} {n:12,d} {per_image:13,d}")
    click.echo(f"total  {'':8s} {sum(sizes.values()):12,d}")
    if verify:
        _verify(store, meta)


def _verify(store, meta):
    from progan.progress import Progress
    from progan.store.verify import verify_store

    bar = Progress(meta["count"] * len(meta["levels"]), sys.stderr.isatty(), unit="records")
    checked, bad = verify_store(store, progress=lambda done, total: bar.update(done))
    bar.finish(checked)
    how = (
        "by checksum"
        if meta["version"] >= 2
        else "by size and decoding only: format 1 has no checksums"
    )
    if not bad:
        click.echo(f"verified:   all {checked} records ({how})")
        return
    for key, problem in bad:
        click.echo(f"bad record: {key}: {problem}")
    click.echo(
        f"error: store '{store}' has {len(bad)} bad records of {checked} (listed above); "
        "prepare it again with progan prepare-lmdb",
        err=True,
    )
    sys.exit(1)
