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


# ----------------------------------------------------------------------------- counter-based generator


def test_philox_matches_random123_known_answers():
    from coupled_sde.counter_rng import philox4x32

    kat = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for ctr, key, want in kat:
        got = philox4x32(*(torch.tensor([c]) for c in ctr), *key)
        assert tuple(int(w) for w in got) == want


def test_mix64_is_splitmix64_finaliser():
    from coupled_sde.counter_rng import mix64

    def ref(z):  # Stafford Mix13 on Python ints
        m = (1 << 64) - 1
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    xs = [0, 1, 12345, (1 << 63) + 7, (1 << 64) - 1, 0x9E3779B97F4A7C15]
    got = mix64(torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in xs]))
    assert [int(g) & ((1 << 64) - 1) for g in got] == [ref(x) for x in xs]


def test_counter_normals_pass_ks_and_moments():
    g = TimeGrid.uniform(0, 1, 200)
    z = GridBrownian(g, 500, (2,), seed=11, dtype=torch.float64).normals(0, 200).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / math.sqrt(z.size) and abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    z32 = GridBrownian(g, None, (3,), seed=list(range(300)), dtype=torch.float32).normals(0, 200).flatten().numpy()
    assert stats.kstest(z32, "norm").pvalue > 1e-3


def test_counter_normals_are_independent_across_streams_samples_and_steps():
    g = TimeGrid.uniform(0, 1, 64)
    n = 4000
    z = GridBrownian(g, n, (2,), seed=12, streams=3, dtype=torch.float64).normals(0, 64)  # (3, n, 64, 2)
    bound = 5 / math.sqrt(n)

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert abs(corr(z[0, :, 0, 0], z[1, :, 0, 0])) < bound  # streams
    assert abs(corr(z[2, :, 5, 1], z[0, :, 5, 1])) < bound
    assert abs(corr(z[0, :, 0, 0], z[0, :, 1, 0])) < bound  # consecutive steps
    assert abs(corr(z[0, :, 0, 0], z[0, :, 0, 1])) < bound  # elements (the cos/sin pair of one word)
    assert abs(corr(z[0, :, 3, 0], z[0, :, 3 + 16 // 2, 0])) < bound  # the sin partner in the block layout
    # samples: neighbouring samples at each step, and per-sample seeds k and k+1
    assert abs(corr(z[0, :-1, :, 0].flatten(), z[0, 1:, :, 0].flatten())) < 5 / math.sqrt(n * 64)
    y = GridBrownian(g, None, (1,), seed=list(range(n)), dtype=torch.float64).normals(0, 64)[0, :, :, 0]
    assert abs(corr(y[:-1].flatten(), y[1:].flatten())) < 5 / math.sqrt(n * 64)
    # an integer seed and a per-sample seed with the same value give different noise
    assert not torch.allclose(GridBrownian(g, 1, (1,), seed=7).normals(0, 4), GridBrownian(g, None, (1,), seed=[7]).normals(0, 4))


def test_counter_values_do_not_depend_on_batch_window_or_precision():
    g = TimeGrid.uniform(0, 1, 300)
    seeds = [5, 99, 2**64 - 1, 123456789012345]
    full = GridBrownian(g, None, (3,), seed=seeds).normals(0, 300)
    rev = GridBrownian(g, None, (3,), seed=seeds[::-1]).normals(0, 300)
    assert torch.equal(full, rev.flip(1))
    one = GridBrownian(g, None, (3,), seed=[seeds[2]]).normals(0, 300)
    assert torch.equal(one[:, 0], full[:, 2])
    src = GridBrownian(g, None, (3,), seed=seeds)
    pieces = torch.cat([src.normals(a, b) for a, b in ((0, 7), (7, 8), (8, 150), (150, 300))], dim=2)
    assert torch.equal(pieces, full)
    f64 = GridBrownian(g, None, (3,), seed=seeds, dtype=torch.float64).normals(0, 300)
    assert torch.allclose(f64.float(), full, rtol=1e-5, atol=1e-4)
    # grid length does not matter, only the step index
    short = TimeGrid(g.times[:51])
    assert torch.equal(GridBrownian(short, None, (3,), seed=seeds).normals(0, 50), full[:, :, :50])


def test_torch_generator_keeps_the_old_values_reachable():
    g = TimeGrid.uniform(0, 1, 10)
    old = GridBrownian(g, 3, (2,), seed=1, generator="torch")
    new = GridBrownian(g, 3, (2,), seed=1)
    assert not torch.allclose(old.normals(0, 10), new.normals(0, 10))
    assert torch.allclose(old.on_grid(g), old.normals(0, 10) * math.sqrt(0.1))
    # the old generator's property: sample noise independent of the batch
    assert torch.equal(old.normals(0, 10)[:, :2], GridBrownian(g, 2, (2,), seed=1, generator="torch").normals(0, 10))
    with pytest.raises(ValueError, match="generator"):
        GridBrownian(g, 3, (2,), seed=1, generator="mt")


def test_seeds_of_numpy_and_tensor_types_are_accepted():
    np = pytest.importorskip("numpy")
    g = TimeGrid.uniform(0, 1, 8)
    ref = GridBrownian(g, 4, (2,), seed=3).normals(0, 8)
    for s in (np.int64(3), np.uint64(3), torch.tensor(3), np.array(3)):
        assert torch.equal(GridBrownian(g, 4, (2,), seed=s).normals(0, 8), ref)
    per = GridBrownian(g, None, (2,), seed=[4, 5, 6]).normals(0, 8)
    for s in (np.array([4, 5, 6]), torch.tensor([4, 5, 6]), (4, 5, 6), [np.int32(4), torch.tensor(5), 6]):
        assert torch.equal(GridBrownian(g, None, (2,), seed=s).normals(0, 8), per)


@pytest.mark.parametrize(
    ("seed", "err", "match"),
    [
        (-1, ValueError, r"outside \[0, 2\*\*64\)"),
        (2**64, ValueError, r"outside \[0, 2\*\*64\)"),
        ([1, -2], ValueError, "outside"),
        (1.5, TypeError, "integers"),
        ([1, 2.0, "x"], TypeError, "float, str"),
        (True, TypeError, "boolean"),
        ("12", TypeError, "seed must be an integer"),
        (torch.tensor([1.0, 2.0]), TypeError, "float32"),
        (torch.zeros(2, 2, dtype=torch.int64), TypeError, "1-d"),
        ([], ValueError, "empty"),
    ],
)
def test_bad_seeds_give_one_clear_error(seed, err, match):
    g = TimeGrid.uniform(0, 1, 4)
    with pytest.raises(err, match=match):
        GridBrownian(g, 2, (), seed=seed)


def test_grid_levy_area_law_composition_and_agreement_with_the_increments():
    fine = TimeGrid.uniform(0.0, 1.0, 64)
    coarse = TimeGrid.uniform(0.0, 1.0, 8)
    src = GridBrownian(fine, 5000, (), seed=13, dtype=torch.float64)
    dw, H = src.levy_on_grid(fine)
    assert torch.allclose(dw, src.on_grid(fine))  # the same increments as the plain source
    assert stats.kstest((H[0, :, 3] / math.sqrt(1 / 64 / 12)).numpy(), "norm").pvalue > 1e-3
    assert abs(float(torch.corrcoef(torch.stack([dw[0, :, 3], H[0, :, 3]]))[0, 1])) < 5 / math.sqrt(5000)
    # composed over 8 fine steps: still N(0, h/12), independent of dW, and equal to the direct span query
    dwc, Hc = src.levy_on_grid(coarse)
    assert torch.allclose(dwc, src.on_grid(coarse), atol=1e-12)
    assert stats.kstest((Hc[0, :, 2] / math.sqrt(1 / 8 / 12)).numpy(), "norm").pvalue > 1e-3
    assert abs(float(torch.corrcoef(torch.stack([dwc[0, :, 2], Hc[0, :, 2]]))[0, 1])) < 5 / math.sqrt(5000)
    d2, h2 = src.space_time_levy_area(coarse[2], coarse[3])
    assert torch.allclose(d2, dwc[:, :, 2]) and torch.allclose(h2, Hc[:, :, 2])
    # the composition rule of the area over two halves: h H = h1 H1 + h2 H2 + (h2 dW1 - h1 dW2)/2
    (w1, H1), (w2, H2) = src.space_time_levy_area(fine[0], fine[24]), src.space_time_levy_area(fine[24], fine[64])
    w, Hall = src.space_time_levy_area(fine[0], fine[64])
    h1, h2 = 24 / 64, 40 / 64
    assert torch.allclose(Hall, h1 * H1 + h2 * H2 + (h2 * w1 - h1 * w2) / 2, atol=1e-12)
    # a decreasing grid: the backward motion's areas, same law
    back = GridBrownian(TimeGrid.uniform(1.0, 0.0, 16), 3000, (), seed=14, dtype=torch.float64)
    _, Hb = back.space_time_levy_area(1.0, 0.5)
    assert stats.kstest((Hb[0] / math.sqrt(0.5 / 12)).numpy(), "norm").pvalue > 1e-3


def test_interval_brownian_names_the_extra_when_torchsde_is_missing(monkeypatch):
    import importlib.util

    from coupled_sde import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchsde" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"coupled-sde\[torchsde\]"):
        IntervalBrownian(0.0, 1.0, 4)
