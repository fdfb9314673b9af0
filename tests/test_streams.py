"""The random streams of training are distinct: no two uses of randomness share a seed."""

from __future__ import annotations

import torch

from progan.train import streams


def _first(gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 1 << 62, (4,), generator=gen, dtype=torch.int64)


def test_stream_numbers_are_distinct():
    assert len(set(streams.STREAMS)) == len(streams.STREAMS)


def test_the_data_order_shares_no_seed_with_any_step_draw():
    """Epoch e's image order against every step stream at positions around e: the data order
    used stream 7 once, the G step's inputs, so epoch 0's order and step 0's G inputs shared a
    seed (this test failed then)."""
    for seed in (0, 1, 12345):
        for epoch in range(3):
            order = _first(streams.data_order_generator(seed, epoch))
            for stream in streams.STREAMS:
                if stream == streams.DATA_ORDER:
                    continue
                for position in (epoch, 0, 8, 16):
                    step = _first(streams.position_generator(seed, position, stream))
                    assert not torch.equal(order, step), (seed, epoch, stream, position)
