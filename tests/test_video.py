"""``progan video``: latent walks between seeds or projected latents, written as MP4 (read back with
imageio, the library that wrote them) or GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from progan.sampling.video import frame_count, tile, walk_point

from helpers import invoke, invoke_clean, one_line_error

STANDIN = Path(__file__).parent / "fixtures" / "project" / "lpips-standin.pt"


def _read(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return np.stack(list(reader.iter_data()))


def test_frame_count_and_walk_points_hit_every_keyframe():
    assert frame_count(4, 10, loop=False) == 31 and frame_count(4, 10, loop=True) == 40
    keys = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    for k in range(3):
        assert torch.equal(walk_point(keys, 10 * k, 10, "w"), keys[k])
    assert torch.equal(walk_point(keys, 30, 10, "w"), keys[0])  # a loop closes on the first
    assert torch.allclose(walk_point(keys, 5, 10, "w"), (keys[0] + keys[1]) / 2)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    z = z / z.norm(dim=1, keepdim=True)
    mid = walk_point(z, 1, 2, "z")  # slerp of directions: on the great circle, halfway in angle
    angle = lambda a, b: torch.acos((a @ b) / (a.norm() * b.norm()))  # noqa: E731
    assert torch.isclose(angle(z[0], mid), angle(mid, z[1]), atol=1e-5)


def test_tile_places_cells_row_by_row():
    imgs = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0, 0.5, -0.5, 0.25)])
    frame = tile(imgs, cols=3, rows=2)
    assert frame.shape == (4, 6, 3)
    assert frame[0, 0, 0] == 0 and frame[0, 4, 0] == 255 and frame[2, 0, 0] == 191


@pytest.mark.parametrize(
    "args, frames, size",
    [
        (["--seeds", "0-3", "--frames-per-seed", 5], 16, (16, 16)),
        (["--seeds", "0-7", "--frames-per-seed", 3, "--loop", "--grid", "2x2"], 6, (32, 32)),
        (["--seeds", "1,2,3,4", "--frames-per-seed", 2, "--grid", "2x1", "--truncation", 0.7,
          "--space", "z"], 3, (16, 32)),
    ],
    ids=["walk", "loop-grid", "z-truncated"],
)  # fmt: skip
def test_video_writes_an_mp4_with_the_asked_frames_and_size(
    style_run, tmp_path, args, frames, size
):
    out = tmp_path / "walk.mp4"
    r = invoke_clean("video", style_run, "--out", out, *args)
    assert r.exit_code == 0, r.output
    video = _read(out)
    assert video.shape == (frames, size[0], size[1], 3)
    assert f"{frames} frames of {size[1]}x{size[0]}" in r.output
    assert not (video[0] == video[-1]).all() or "--loop" in args


def test_progan_walk_in_z_and_gif(trained_run, tmp_path):
    out = tmp_path / "walk.gif"
    r = invoke_clean("video", trained_run, "--out", out, "--seeds", "0-2", "--frames-per-seed", 4)
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(out) as gif:
        assert gif.n_frames == 9 and gif.size == (16, 16)


def test_walk_between_projected_latents(style_run, tmp_path):
    from progan.store.demo import make_demo_images

    make_demo_images(tmp_path / "faces", n=2, size=16, seed=3)
    r = invoke_clean("project", style_run, "--target", tmp_path / "faces", "--out", tmp_path / "p",
                     "--steps", 2, "--vgg-weights", STANDIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    latents = sorted((tmp_path / "p").glob("*.npz"))
    out = tmp_path / "between.mp4"
    r = invoke_clean("video", style_run, "--out", out, "--seeds", "0", "--latents", latents[0],
                     "--latents", latents[1], "--frames-per-seed", 2)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _read(out).shape == (5, 16, 16, 3)


def test_video_errors_are_one_line(style_run, trained_run, tmp_path):
    out = ["--out", tmp_path / "w.mp4"]
    one_line_error(invoke("video", style_run, "--out", tmp_path / "w.avi"), "--out", ".mp4")
    one_line_error(invoke("video", style_run, *out, "--seeds", "0-4", "--grid", "2x2"),
                   "--grid 2x2", "multiple of 4")  # fmt: skip
    one_line_error(invoke("video", style_run, *out, "--seeds", "0"), "at least 2")
    one_line_error(invoke("video", style_run, *out, "--seeds", "a-b"), "--seeds")
    one_line_error(invoke("video", style_run, *out, "--grid", "3"), "--grid")
    one_line_error(invoke("video", trained_run, *out, "--space", "w"), "--space w", "style-based")
    one_line_error(invoke("video", trained_run, *out, "--truncation", 0.5), "--truncation")
    assert not (tmp_path / "w.mp4").exists()
