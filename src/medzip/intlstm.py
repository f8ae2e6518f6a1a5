"""Integer-exact LSTM cell and linear head: the arithmetic every medzip LSTM model runs.

Fixed-point conventions (shared with the PyTorch quantisation-aware cell in
training/qlstm.py, which simulates exactly these roundings):

* inputs and hidden state ``h`` are int8-range integers meaning ``value / 128``;
* gate weights are int8 meaning ``w / 2**a``; biases int32 at the accumulator scale
  ``2**(a + 7)``; the pre-activation index ``k = round(acc / 2**(a + 3))`` is ``16 * z``,
  clamped to [-128, 128];
* ``sigmoid`` and ``tanh`` come from integer lookup tables stored in the model file (made once
  at export; no transcendental function runs while coding);
* the cell state ``c`` is int32 meaning ``c / 2**14``, clamped to +-8.

Every accumulation is an integer sum, so results are identical on every CPU, thread count and
batch size.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

C_FRAC = 14
C_CLAMP = 8 << C_FRAC
LUT_HALF = 128  # tables have 2 * LUT_HALF + 1 entries


def make_luts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer tables for sigmoid(k/16), tanh(k/16) (gates) and tanh(k/32) (cell output)."""
    k = np.arange(-LUT_HALF, LUT_HALF + 1, dtype=np.float64)
    sig = np.round(128.0 / (1.0 + np.exp(-k / 16.0)))
    tanh_g = np.clip(np.round(128.0 * np.tanh(k / 16.0)), -127, 127)
    tanh_c = np.clip(np.round(128.0 * np.tanh(k / 32.0)), -127, 127)
    return sig.astype(np.int32), tanh_g.astype(np.int32), tanh_c.astype(np.int32)


@numba.njit(cache=True, inline="always")
def _rshift_round(v, s):
    return (v + (1 << (s - 1))) >> s if s > 0 else v


@numba.njit(cache=True, inline="always")
def cell_update(acc, h, c, shift, sig, tanh_g, tanh_c):
    """Gates from integer accumulators (bias included), then the state update, in place."""
    hid = h.size
    for j in range(hid):
        ki = min(max(_rshift_round(acc[j], shift), -LUT_HALF), LUT_HALF) + LUT_HALF
        kf = min(max(_rshift_round(acc[hid + j], shift), -LUT_HALF), LUT_HALF) + LUT_HALF
        kg = min(max(_rshift_round(acc[2 * hid + j], shift), -LUT_HALF), LUT_HALF) + LUT_HALF
        ko = min(max(_rshift_round(acc[3 * hid + j], shift), -LUT_HALF), LUT_HALF) + LUT_HALF
        cj = ((sig[kf] * c[j]) >> 7) + sig[ki] * tanh_g[kg]
        cj = min(max(cj, -C_CLAMP), C_CLAMP)
        c[j] = cj
        kc = min(max(cj >> (C_FRAC - 5), -LUT_HALF), LUT_HALF) + LUT_HALF
        h[j] = (sig[ko] * tanh_c[kc] + 64) >> 7


def exact_float32_weights(w: np.ndarray) -> np.ndarray:
    """Gate weights transposed as float32 for a batched BLAS product that is provably exact.

    Inputs and hidden states are integers in [-127, 127] and weights in [-127, 127], so every
    product and partial sum of ``[x; h] @ w.T`` is an integer below 2**24 in magnitude and
    float32 represents it exactly, whatever the summation order, blocking or FMA use.
    """
    if w.shape[1] * 127 * 127 >= (1 << 24):
        raise ValueError("layer too wide for exact float32 accumulation")
    return np.ascontiguousarray(w.T.astype(np.float32))


# Rows per matrix product in gate_sums: 96 x 41 x 64 multiply-adds stay under OpenBLAS's
# threshold for threading a product (65536 * 4), so each block runs on the calling thread: no
# BLAS thread pool competes with medzip's worker processes or with other threads' calls. The
# blocks go to numpy as one stacked product (its loop over them runs in C): ~25 % less time
# than one Python-level call per block.
GATE_BLOCK = 96


def gate_sums(xh: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """``xh @ w_t`` (float32 rows of [inputs; h] times exact_float32_weights): every gate's
    integer pre-activation before its bias.

    Exact whatever order a BLAS sums in (see exact_float32_weights), as long as it computes in
    IEEE single precision; a BLAS set to a reduced-precision mode (TF32, bf16) would not, so the
    first call checks the product on extreme values against integer arithmetic and, if it
    differs, every call uses the numba loop instead."""
    out = np.empty((xh.shape[0], w_t.shape[1]), np.float32)
    if not _blas_is_exact():
        _gate_sums_loop(xh, w_t, out)
        return out
    n, full = xh.shape[0], xh.shape[0] - xh.shape[0] % GATE_BLOCK
    if full:
        np.matmul(xh[:full].reshape(-1, GATE_BLOCK, xh.shape[1]), w_t,
                  out=out[:full].reshape(-1, GATE_BLOCK, out.shape[1]))
    if n > full:
        np.matmul(xh[full:], w_t, out=out[full:])
    return out


@lru_cache(maxsize=1)
def _blas_is_exact() -> bool:
    k = np.arange(GATE_BLOCK * 57, dtype=np.int64).reshape(GATE_BLOCK, 57)
    x = (k * 37) % 255 - 127
    x[:8] = 127 * np.where(k[:8] % 3 == 0, -1, 1)  # rows of full-scale values: sums near 2**20
    w = ((np.arange(57 * 64, dtype=np.int64).reshape(57, 64) * 91) % 255) - 127
    w[:, :4] = 127
    want = x @ w
    got = np.empty(want.shape, np.float32)
    np.matmul(x.astype(np.float32), w.astype(np.float32), out=got)
    return bool(np.array_equal(got.astype(np.int64), want))


@numba.njit(cache=True)
def _gate_sums_loop(xh, w_t, out):
    """gate_sums without BLAS (float32, output index innermost: vectorised, never reassociated)."""
    for i in range(xh.shape[0]):
        for j in range(w_t.shape[1]):
            out[i, j] = 0
        for k in range(w_t.shape[0]):
            xk = xh[i, k]
            for j in range(w_t.shape[1]):
                out[i, j] += w_t[k, j] * xk


@numba.njit(cache=True)
def linear_head(h, w, b, out):
    """out = w @ h + b in the accumulator scale 2**(a_out + 7) (int64)."""
    for j in range(out.size):
        s = np.int64(b[j])
        for k in range(h.size):
            s += w[j, k] * h[k]
        out[j] = s


class QuantLSTMParams:
    """Integer weights of one LSTM layer and its head, as loaded from a model file."""

    def __init__(self, arrays: dict, prefix: str = ""):
        g = lambda k: np.ascontiguousarray(arrays[prefix + k])  # noqa: E731
        self.w = g("lstm_w").astype(np.int64)
        self.b = g("lstm_b").astype(np.int64)
        self.shift = int(arrays[prefix + "lstm_shift"])
        self.head_w = g("head_w").astype(np.int64)
        self.head_b = g("head_b").astype(np.int64)
        self.head_shift = int(arrays[prefix + "head_shift"])
        self.sig = g("lut_sig").astype(np.int64)
        self.tanh_g = g("lut_tanh_g").astype(np.int64)
        self.tanh_c = g("lut_tanh_c").astype(np.int64)
        self.hidden = self.w.shape[0] // 4
        self.inputs = self.w.shape[1] - self.hidden
        if np.abs(self.w).max() > 127 or np.abs(self.head_w).max() > 127:
            raise ValueError("model weights exceed int8")
        if self.shift < 1 or self.head_shift < 1:
            raise ValueError("model fixed-point shifts must be positive")
