"""Counter-based random normals: values are a pure function of (seed, sample, stream, index).

A counter-based generator (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3")
maps a *key* and a *counter* to random bits with a fixed bijective hash, so any entry of a random array
can be computed on its own, in any order, on any device, with no generator state. Here everything is
written in ``int64`` tensor operations (torch has few ``uint32`` ops; 32-bit words live in ``int64``
lanes, 64-bit products wrap modulo 2**64 and logical shifts are arithmetic shifts with a mask), so the
bits are computed directly on the state's device, identically on CPU and GPU.

Two layers, because the two jobs have different sizes:

* **Keys** -- one per (seed, sample, stream, domain) -- come from Philox4x32-10 (Salmon et al. 2011; checked
  against Random123's known-answer vectors in the tests). These are few (one per sample and stream), so
  the 10-round hash costs nothing.
* **Bulk bits** -- one 64-bit word per pair of normals -- come from the SplitMix64 construction (Steele,
  Lea & Flood 2014, "Fast splittable pseudorandom number generators", the generator behind Java's
  ``SplittableRandom``): the finaliser ``mix64`` applied to the Weyl sequence ``key + gamma * index``,
  with a per-stream key *and* a per-stream odd ``gamma`` (the "split" of that paper, with its
  ``mixGamma`` correction of gammas with too few bit transitions). Per sample and stream this is exactly
  SplitMix64's output sequence, which passes BigCrush; distinct gammas keep streams from being shifted
  copies of one another. It costs about a quarter of a Philox4x32-10 block per normal, which is what
  makes per-sample seeds as cheap as one ``torch.randn`` (``benchmarks/bench_ou.py``).

Normals: Box--Muller on the two 32-bit halves of each word, ``(r cos theta, r sin theta)`` with
``r = sqrt(-2 log u1)``, ``u1 = (hi + 1/2) 2**-32``, ``theta = 2 pi lo 2**-32``: two normals per word,
computed in float32 (or float64 for a float64 state) from the same integers, so a float64 path equals the
float32 one to float32 rounding. The largest value is ``sqrt(2 log 2**33) = 6.8`` (a normal exceeds it
with probability 1e-11). Integer bits are identical across devices; the float transform uses the
device's ``log``/``cos``/``sin``, which agree to a few ulp (``benchmarks/check_gpu_noise.py`` measures it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["philox4x32", "derive_keys", "mix64", "counter_bits", "box_muller", "counter_normals", "parse_seed"]

Tensor = torch.Tensor
_M32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _signed(x: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``x``."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(x: Tensor, n: int) -> Tensor:
    """Logical right shift of int64 lanes (torch's ``>>`` is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def philox4x32(
    c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, k0: Tensor | int, k1: Tensor | int, rounds: int = 10
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32 (Salmon et al. 2011) on 32-bit words held in int64 tensors (broadcasting).

    Returns the four output words, each in ``[0, 2**32)``. With ``rounds=10`` this is Philox4x32-10, the
    generator of Random123, cuRAND and JAX's ``"rbg"`` family.
    """
    c0, c1, c2, c3 = (
        c & _M32 for c in torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) for c in (c0, c1, c2, c3)))
    )
    for r in range(rounds):
        p0, p1 = c0 * _PHILOX_M0, c2 * _PHILOX_M1  # exact 64-bit products (both factors < 2**32)
        # c1 and c3 may carry the high half of a product above bit 31: one mask after the xors clears it.
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _M32, p1, ((p0 >> 32) ^ c3 ^ k1) & _M32, p0
        if r + 1 < rounds:
            k0, k1 = (k0 + _PHILOX_W0) & _M32, (k1 + _PHILOX_W1) & _M32
    return c0, c1 & _M32, c2, c3 & _M32


def _popcount64(x: Tensor) -> Tensor:
    x = x - (_shr(x, 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + (_shr(x, 2) & 0x3333333333333333)
    x = (x + _shr(x, 4)) & 0x0F0F0F0F0F0F0F0F
    return _shr(x * 0x0101010101010101, 56)


def derive_keys(lo: Tensor, hi: Tensor, word2: Tensor | int, word3: Tensor | int, domain: int) -> tuple[Tensor, Tensor]:
    """Per-stream ``(key, gamma)`` int64 pairs: Philox4x32-10 of the counter ``(lo, hi, word2, word3)`` under
    the key ``(domain, 0x5EEDC0DE)``. ``gamma`` is odd and has at least 24 bit transitions (SplitMix64's
    ``mixGamma`` rule)."""
    x0, x1, x2, x3 = philox4x32(lo, hi, torch.as_tensor(word2).to(lo), torch.as_tensor(word3).to(lo), domain & _M32, 0x5EEDC0DE)
    key = (x0 << 32) | x1
    gamma = (x2 << 32) | x3 | 1
    few = _popcount64(gamma ^ _shr(gamma, 1)) < 24
    gamma = torch.where(few, gamma ^ _signed(0xAAAAAAAAAAAAAAAA), gamma)
    return key, gamma


_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def mix64(z: Tensor, tmp: Tensor | None = None) -> Tensor:
    """SplitMix64's finaliser (Stafford's "Mix13"), a bijection of 64-bit words; modifies ``z`` in place
    (``tmp``: an optional scratch tensor like ``z``)."""
    t = torch.empty_like(z) if tmp is None else tmp
    for shift, mult in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=t)
        z.bitwise_xor_(t.bitwise_and_((1 << (64 - shift)) - 1))
        if mult is not None:
            z.mul_(mult)
    return z


def counter_bits(key: Tensor, gamma: Tensor, index: Tensor, tmp: Tensor | None = None) -> Tensor:
    """64 random bits per ``(stream, index)``: ``mix64(key + gamma * index)``; ``key``/``gamma`` broadcast
    against ``index`` (e.g. ``(R, 1)`` against ``(n,)``)."""
    z = torch.mul(gamma, index).add_(key)
    return mix64(z, tmp if tmp is not None and tmp.shape == z.shape else None)


_TWO_M32 = 2.0**-32


def box_muller(
    bits: Tensor, dtype: torch.dtype, out: tuple[Tensor, Tensor] | None = None, tmp: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Two independent standard normals per 64-bit word: ``(r cos theta, r sin theta)`` with
    ``r = sqrt(-2 log((hi + 1/2) 2**-32))`` and ``theta = 2 pi lo 2**-32`` (``hi``, ``lo`` its 32-bit halves).

    Computed in float64 for ``dtype=float64``, else in float32 (then cast); written into ``out`` if given.
    Consumes ``bits`` (overwritten); ``tmp`` is an optional int64 scratch tensor shaped like ``bits``.
    Written with in-place operations: fresh large buffers cost page faults, more than the arithmetic.
    """
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    hi = torch.bitwise_right_shift(bits, 32, out=tmp) if tmp is not None else bits >> 32
    r = hi.bitwise_and_(_M32).to(fdt).add_(0.5).mul_(_TWO_M32).log_().mul_(-2.0).sqrt_()
    theta = bits.bitwise_and_(_M32).to(fdt).mul_(2.0 * math.pi * _TWO_M32)
    if out is not None and fdt == dtype:
        torch.mul(theta.cos(), r, out=out[0])  # (cos into a strided view directly is slower)
        torch.mul(theta.sin_(), r, out=out[1])
        return out
    c, s = theta.cos().mul_(r), theta.sin_().mul_(r)
    if fdt != dtype:
        c, s = c.to(dtype), s.to(dtype)
    if out is not None:
        out[0].copy_(c), out[1].copy_(s)
        return out
    return c, s


#: Normals come in blocks of ``2 * _Q``: word ``j * _Q + q`` gives normal ``q`` (its cosine) and normal
#: ``_Q + q`` (its sine) of block ``j``, so that a window of normals is written in contiguous runs.
_Q = 16


def counter_normals(key: Tensor, gamma: Tensor, start: int, count: int, dtype: torch.dtype) -> Tensor:
    """Standard normals ``start .. start + count - 1`` of each stream: shape ``(*key.shape[:-1], count)``.

    Normal ``n`` of a stream depends on ``(key, gamma, n)`` only (block ``n // 32`` of 16 words), so any
    window gives the same values as the full sequence (``key``, ``gamma``: ``(..., 1)`` int64 tensors from
    :func:`derive_keys`).
    """
    j0, j1 = start // (2 * _Q), -(-(start + count) // (2 * _Q))
    index = torch.arange(j0 * _Q, j1 * _Q, dtype=torch.int64, device=key.device)
    z = torch.mul(gamma, index).add_(key)
    tmp = torch.empty_like(z)
    bits = mix64(z, tmp)
    lead = bits.shape[:-1]
    out = torch.empty(lead + (j1 - j0, 2, _Q), dtype=dtype, device=key.device)
    shape = lead + (j1 - j0, _Q)
    box_muller(bits.view(shape), dtype, (out.select(-2, 0), out.select(-2, 1)), tmp.view(shape))
    out = out.view(lead + (-1,))
    off = start - 2 * _Q * j0
    if off == 0 and count == out.shape[-1]:
        return out
    return out[..., off : off + count]


# ----------------------------------------------------------------------------- seeds

_SEED_HELP = "a seed is an integer in [0, 2**64) (int, numpy integer or 0-d integer tensor), or one such integer per sample"


def _check_int(k: object) -> int:
    if isinstance(k, (bool, np.bool_)):
        raise TypeError(f"seeds must be integers, not booleans ({_SEED_HELP})")
    if isinstance(k, torch.Tensor):
        if k.dim() != 0 or k.dtype.is_floating_point or k.dtype.is_complex or k.dtype == torch.bool:
            raise TypeError(f"a tensor seed must be a 0-d integer tensor, got {k.dtype} of shape {tuple(k.shape)} ({_SEED_HELP})")
        k = int(k.item())
    elif isinstance(k, numbers.Integral):
        k = int(k)
    else:
        raise TypeError(f"seeds must be integers, got {type(k).__name__} {k!r} ({_SEED_HELP})")
    if not 0 <= k < 1 << 64:
        raise ValueError(f"seed {k} is outside [0, 2**64): seeds are not taken modulo anything, pass a seed in range")
    return k


def parse_seed(seed: object) -> int | list[int]:
    """Normalise a seed: an ``int`` for one integer seed, a ``list[int]`` for per-sample seeds.

    Accepts Python and numpy integers, 0-d integer tensors (an integer seed), and sequences, numpy arrays
    or 1-d tensors of integers (per-sample seeds). Raises ``TypeError`` for anything else (floats,
    booleans, strings, nested lists) and ``ValueError`` for values outside ``[0, 2**64)`` or an empty list.
    """
    if (isinstance(seed, torch.Tensor) and seed.dim() == 0) or isinstance(seed, (numbers.Integral, np.generic)):
        return _check_int(seed)
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        return _check_int(seed.item())
    if isinstance(seed, torch.Tensor):
        if seed.dim() != 1:
            raise TypeError(f"per-sample seeds must be a 1-d tensor, got shape {tuple(seed.shape)} ({_SEED_HELP})")
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise TypeError(f"per-sample seeds must be integers, got a {seed.dtype} tensor ({_SEED_HELP})")
        items: Sequence[object] = seed.tolist()
    elif isinstance(seed, np.ndarray):
        if seed.ndim != 1:
            raise TypeError(f"per-sample seeds must be a 1-d array, got shape {seed.shape} ({_SEED_HELP})")
        if seed.dtype.kind not in "iu":
            raise TypeError(f"per-sample seeds must be integers, got a {seed.dtype} array ({_SEED_HELP})")
        items = seed.tolist()
    elif isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence):
        raise TypeError(f"seed must be an integer or a sequence of per-sample integers, got {type(seed).__name__} ({_SEED_HELP})")
    else:
        items = seed
    if len(items) == 0:
        raise ValueError("per-sample seeds: got an empty sequence")
    if all(type(k) is int for k in items):  # the common case, checked in bulk
        if min(items) < 0 or max(items) >= 1 << 64:
            bad = next(k for k in items if not 0 <= k < 1 << 64)
            raise ValueError(f"seed {bad} is outside [0, 2**64): seeds are not taken modulo anything, pass a seed in range")
        return list(items)
    bad = [k for k in items if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Integral, torch.Tensor))]
    if bad:
        kinds = sorted({type(k).__name__ for k in bad})
        raise TypeError(f"per-sample seeds must all be integers; got {len(bad)} of type {', '.join(kinds)} (first: {bad[0]!r})")
    return [_check_int(k) for k in items]


def seed_words(seeds: Sequence[int], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Low and high 32-bit words of 64-bit seeds, as int64 tensors on ``device``."""
    arr = np.asarray(seeds, dtype=np.uint64)
    lo = torch.from_numpy((arr & np.uint64(_M32)).astype(np.int64))
    hi = torch.from_numpy((arr >> np.uint64(32)).astype(np.int64))
    return lo.to(device), hi.to(device)
