import math

import pytest
import torch

from coupled_sde import TimeGrid


def test_uniform_has_exact_steps_and_snapped_endpoints():
    g = TimeGrid.uniform(0.0, 1.0, 1000)
    assert g.n_steps == 1000 and len(g) == 1001
    assert g[0] == 0.0 and g[-1] == 1.0
    assert g.times.dtype == torch.float64


def test_decreasing_grid_signed_steps():
    g = TimeGrid.uniform(1.0, 0.0, 4)
    assert not g.increasing
    assert all(dt < 0 for _, dt in g.steps())
    assert math.isclose(sum(dt for _, dt in g.steps()), -1.0)


@pytest.mark.parametrize(
    "times, msg",
    [
        ([0.0, 0.5, 0.5, 1.0], "repeated"),
        ([0.0, 0.6, 0.4, 1.0], "strictly"),
        ([0.0], "at least 2"),
        ([0.0, float("nan")], "finite"),
    ],
)
def test_bad_grids_raise(times, msg):
    with pytest.raises(ValueError, match=msg):
        TimeGrid(times)


def test_bad_step_count():
    with pytest.raises(ValueError, match="positive integer"):
        TimeGrid.uniform(0, 1, 0)
    with pytest.raises(ValueError, match="positive integer"):
        TimeGrid.uniform(0, 1, 2.5)


def test_refine_keeps_coarse_points_exactly():
    g = TimeGrid.rectified_flow(7, shift=3.0)
    f = g.refine(4)
    assert f.n_steps == 28
    assert f.times[::4].tolist() == g.times.tolist()
    assert g.is_subgrid_of(f) and not f.is_subgrid_of(g)
    assert f.coarsen(4) == g


def test_rectified_flow_schedules():
    g = TimeGrid.rectified_flow(28, mu=1.15)
    assert g.n_steps == 28 and g[0] == 1.0 and g[-1] == 0.0 and not g.increasing
    s = 1.0 - 3 / 28
    assert math.isclose(g[3], math.exp(1.15) / (math.exp(1.15) + 1 / s - 1), rel_tol=1e-12)


def test_sub_and_index():
    g = TimeGrid.uniform(0, 1, 10)
    s = g.sub(4)
    assert s.n_steps == 6 and s[0] == g[4]
    assert g.index(g[7]) == 7
    with pytest.raises(KeyError):
        g.index(0.123)
    with pytest.raises(ValueError):
        g.sub(10)
