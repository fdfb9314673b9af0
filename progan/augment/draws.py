"""Where an augmentation's random numbers come from.

Every augmentation in this package takes its random numbers from a ``Draws`` object, one call per
tensor, in an order that each pipeline documents. Three reasons: a training step can draw them
from its own seeded stream for the whole global minibatch and keep this process's rows, so that any
number of processes augments alike and a resumed run draws what an unbroken one would; the tests
can replay the exact draws that the official code made; and a caller can record what was drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Draws:
    """Random numbers from ``generator`` (the global generator when None), drawn for ``rows``.

    ``rows = (lo, hi, n)`` draws every tensor for ``n`` rows (the global minibatch) and returns
    rows ``lo:hi`` (this process's shard); a request's first dimension must then be ``hi - lo``.
    Tensors are drawn on the CPU in float32 / int64: the pipelines work out the transforms there
    (no device synchronisation) and move what they apply to the images' device.
    """

    def __init__(
        self, generator: torch.Generator | None = None, rows: tuple[int, int, int] | None = None
    ):
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("augmentation draws come from a CPU generator")
        self.generator = generator
        self.rows = rows

    def whole(self) -> Draws:
        """These draws for the whole batch: the same stream, no rows kept."""
        return self if self.rows is None else Draws(self.generator)

    def _shape(self, shape: Sequence[int]) -> list[int]:
        shape = [int(s) for s in shape]
        if self.rows is not None:
            lo, hi, n = self.rows
            if shape[0] != hi - lo:
                raise ValueError(f"draws for rows {lo}:{hi} asked for a batch of {shape[0]}")
            shape[0] = n
        return shape

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.rows is None else t[self.rows[0] : self.rows[1]]

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        """Uniform on [0, 1), float32."""
        t = torch.rand(self._shape(shape), generator=self.generator)
        return self._rows(t)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal, float32."""
        t = torch.randn(self._shape(shape), generator=self.generator)
        return self._rows(t)

    def randint(self, low: int, high: int, shape: Sequence[int]) -> torch.Tensor:
        """Integers in [low, high), int64."""
        t = torch.randint(low, high, self._shape(shape), generator=self.generator)
        return self._rows(t)


class ReplayDraws(Draws):
    """Replays recorded draws ``[(kind, tensor), ...]`` in order (kind: rand, randn or randint).

    A request whose kind or shape differs from the next recording raises ``ValueError``: the
    pipeline drew in another order than the one recorded. ``remaining`` counts what is left.
    """

    def __init__(self, recorded: Sequence[tuple[str, torch.Tensor]]):
        super().__init__()
        self._recorded = list(recorded)
        self._next = 0

    @property
    def remaining(self) -> int:
        return len(self._recorded) - self._next

    def _pop(self, kind: str, shape: Sequence[int]) -> torch.Tensor:
        if self._next >= len(self._recorded):
            raise ValueError(f"asked for {kind}{list(shape)} after the last recorded draw")
        got_kind, t = self._recorded[self._next]
        if got_kind != kind or list(t.shape) != [int(s) for s in shape]:
            raise ValueError(
                f"draw {self._next}: asked for {kind}{list(shape)}, "
                f"recorded {got_kind}{list(t.shape)}"
            )
        self._next += 1
        return t

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        return self._pop("rand", shape)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        return self._pop("randn", shape)

    def randint(self, low: int, high: int, shape: Sequence[int]) -> torch.Tensor:
        t = self._pop("randint", shape)
        if t.numel() and not (low <= int(t.min()) and int(t.max()) < high):
            raise ValueError(f"draw {self._next - 1}: recorded integers outside [{low}, {high})")
        return t


class RecordingDraws(Draws):
    """Draws from ``inner`` and keeps each tensor in ``recorded`` as ``(kind, tensor)``."""

    def __init__(self, inner: Draws):
        super().__init__()
        self.inner = inner
        self.recorded: list[tuple[str, torch.Tensor]] = []

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        t = self.inner.rand(shape)
        self.recorded.append(("rand", t))
        return t

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        t = self.inner.randn(shape)
        self.recorded.append(("randn", t))
        return t

    def randint(self, low: int, high: int, shape: Sequence[int]) -> torch.Tensor:
        t = self.inner.randint(low, high, shape)
        self.recorded.append(("randint", t))
        return t
