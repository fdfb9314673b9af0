"""Frames to a video file: MP4 through imageio's ffmpeg plugin, GIF through Pillow.

A leaf of ``progan.sampling``: the projector (its optimisation video) and ``progan video`` both
write here, so neither imports the other. MP4 is H.264 (yuv420p, which needs even sizes; progan's
images are powers of two); imageio-ffmpeg installs its own ffmpeg binary from PyPI, so nothing
needs to be on the system. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from progan.errors import ProganError
from progan.fileio import atomic_path, write_failure

VIDEO_SUFFIXES = (".mp4", ".gif")


def check_video_path(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a Path if its suffix names a format written here, else a one-line error."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ProganError(
            f"{option} '{path}': a video is written as {' or '.join(VIDEO_SUFFIXES)}, "
            f"not '{path.suffix or 'no suffix'}'"
        )
    return path


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30) -> int:
    """Write (H, W, 3) uint8 ``frames`` to ``path`` (.mp4 or .gif); returns the number written.

    Frames are consumed one at a time (a long walk never sits in memory as MP4). An MP4 frame
    must have even sides (H.264's 4:2:0 chroma); it is never rescaled (``macro_block_size=1``).
    """
    path = check_video_path(path)
    count = 0
    try:
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".gif":
                count = _write_gif(tmp, frames, fps)
            else:
                count = _write_mp4(tmp, frames, fps)
    except OSError as e:
        raise write_failure(f"'{path}'", path.parent, e) from None
    return count


def _write_mp4(tmp: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    import imageio.v2 as imageio

    count = 0
    writer = imageio.get_writer(
        tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8, macro_block_size=1,
        pixelformat="yuv420p", ffmpeg_log_level="error",
    )  # fmt: skip
    try:
        for frame in frames:
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                raise ProganError(
                    f"an MP4 frame needs even sides (H.264 4:2:0), got {frame.shape[1]}x"
                    f"{frame.shape[0]}; write a .gif instead"
                )
            writer.append_data(np.ascontiguousarray(frame))
            count += 1
    finally:
        writer.close()
    return count


def _write_gif(tmp: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    from PIL import Image

    pil = [Image.fromarray(f) for f in frames]
    if pil:
        duration = max(20, round(1000 / fps))  # browsers draw faster GIF frames at 10 fps
        pil[0].save(tmp, save_all=True, append_images=pil[1:], duration=duration, loop=0)
    return len(pil)
