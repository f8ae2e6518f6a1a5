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
