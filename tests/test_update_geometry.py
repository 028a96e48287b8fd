"""The per-update telemetry (twogrpo.telemetry.UpdateGeometry): how far an optimizer update moves the weights, and
whether successive updates point the same way."""

import pytest
import torch

from twogrpo.distributed import Dist
from twogrpo.telemetry import UpdateGeometry


def test_an_updates_size_and_its_cosine_with_the_update_before():
    """Two updates of weights held as two tensors: the sizes ||delta|| / ||theta after|| and the second update's
    cosine with the first, against their definitions; the first update has no cosine."""
    weights = [torch.tensor([3.0, 4.0]), torch.tensor([[0.0], [12.0]])]  # |theta| = 13
    geometry = UpdateGeometry()
    steps = [[torch.tensor([1.0, 0.0]), torch.tensor([[0.0], [0.0]])],
             [torch.tensor([1.0, 1.0]), torch.tensor([[0.0], [0.0]])]]
    measured = []
    for step in steps:
        before = UpdateGeometry.snapshot(weights)
        for w, d in zip(weights, step, strict=True):
            w += d
        measured.append(geometry.measure(weights, before, Dist()))
    (size_1, cosine_1), (size_2, cosine_2) = measured
    assert size_1 == pytest.approx(1 / (4**2 + 4**2 + 12**2) ** 0.5) and cosine_1 != cosine_1  # NaN: no update before
    assert size_2 == pytest.approx(2**0.5 / (5**2 + 5**2 + 12**2) ** 0.5)
    assert cosine_2 == pytest.approx(1 / 2**0.5)
