import math

import pytest
import torch
from scipy import stats

from coupled_sde import GridBrownian, IntervalBrownian, RecordedBrownian, TimeGrid


def test_grid_increments_are_standard_normal_scaled():
    g = TimeGrid.uniform(0.0, 2.0, 50)
    inc = GridBrownian(g, 400, (3,), seed=1, dtype=torch.float64).on_grid(g)
    z = (inc / math.sqrt(2.0 / 50)).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert inc.shape == (1, 400, 50, 3)


def test_decreasing_grid_increments_have_variance_abs_dt():
    g = TimeGrid.rectified_flow(10, shift=3.0)
    inc = GridBrownian(g, 5000, (), seed=2, dtype=torch.float64).on_grid(g)[0]
    dts = g.times.diff().abs()
    for i in (0, 5, 9):
        assert stats.kstest((inc[:, i] / dts[i].sqrt()).numpy(), "norm").pvalue > 1e-3


def test_same_seed_same_path_and_different_seed_differs():
    g = TimeGrid.uniform(0, 1, 20)
    a = GridBrownian(g, 8, (2,), seed=3).on_grid(g)
    b = GridBrownian(g, 8, (2,), seed=3).on_grid(g)
    c = GridBrownian(g, 8, (2,), seed=4).on_grid(g)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_of_a_sample_does_not_depend_on_the_batch_around_it():
    g = TimeGrid.uniform(0, 1, 100)
    small = GridBrownian(g, 3, (2,), seed=5).on_grid(g)
    big = GridBrownian(g, 130, (2,), seed=5).on_grid(g)
    assert torch.equal(small, big[:, :3])
    one = GridBrownian(g, None, (2,), seed=[11]).on_grid(g)
    many = GridBrownian(g, None, (2,), seed=[9, 10, 11, 12]).on_grid(g)
    assert torch.equal(one[:, 0], many[:, 2])


def test_step_values_do_not_depend_on_grid_length_or_query_order():
    g = TimeGrid.uniform(0, 1, 1000)
    h = TimeGrid(g.times[:301])
    a = GridBrownian(g, 4, (2,), seed=6, dtype=torch.float64).on_grid(g)[:, :, :300]
    b = GridBrownian(h, 4, (2,), seed=6, dtype=torch.float64).on_grid(h)
    assert torch.equal(a, b)
    src = GridBrownian(g, 4, (2,), seed=6, dtype=torch.float64)
    late, early = src.steps(500, 510), src.steps(0, 10)
    assert torch.equal(early, a[:, :, :10]) and torch.equal(late, src.on_grid(g)[:, :, 500:510])


def test_refined_grid_gives_the_same_path():
    coarse = TimeGrid.uniform(0, 1, 16)
    fine = coarse.refine(8)
    src = GridBrownian(fine, 6, (2,), seed=7, dtype=torch.float64)
    f = src.on_grid(fine)
    c = src.on_grid(coarse)
    assert torch.allclose(c, f.reshape(1, 6, 16, 8, 2).sum(3), atol=1e-14)
    assert torch.allclose(src.increment(coarse[2], coarse[5]), f[:, :, 16:40].sum(2), atol=1e-14)
    with pytest.raises(ValueError, match="sub-grid"):
        src.on_grid(TimeGrid.uniform(0, 1, 7))


def test_interval_brownian_bridge_is_consistent():
    bm = IntervalBrownian(0.0, 1.0, 4000, (), seed=8, dtype=torch.float64)
    w1 = bm.increment(0.0, 1.0)
    a, b = bm.increment(0.0, 0.3), bm.increment(0.3, 1.0)
    assert torch.allclose(a + b, w1, atol=1e-12)
    # Conditional on W(1), W(0.3) is N(0.3 W(1), 0.3 * 0.7)
    resid = (a - 0.3 * w1)[0] / math.sqrt(0.3 * 0.7)
    assert stats.kstest(resid.numpy(), "norm").pvalue > 1e-3
    # decreasing queries give the backward increment with the same law
    assert torch.allclose(bm.increment(1.0, 0.3), b, atol=1e-12)


def test_recorded_brownian_replays():
    g = TimeGrid.uniform(0, 1, 10)
    src = GridBrownian(g, 3, (2,), seed=9)
    rec = RecordedBrownian.from_source(src, g)
    assert torch.equal(rec.on_grid(g), src.on_grid(g))
    assert torch.allclose(rec.increment(g[1], g[4]), src.on_grid(g)[:, :, 1:4].sum(2))
    with pytest.raises(ValueError, match="n_steps"):
        RecordedBrownian(g, torch.zeros(1, 3, 9, 2))
