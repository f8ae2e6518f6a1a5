"""PyTorch model that simulates the integer arithmetic of intlstm.py (quantisation-aware).

With ``quantized=False`` it is a plain float row LSTM (fast pre-training); with
``quantized=True`` every rounding of the integer coder is simulated with straight-through
gradients, so the exported integer network behaves like the trained one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..intlstm import C_CLAMP, C_FRAC, LUT_HALF, make_luts


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def weight_exponent(w: torch.Tensor) -> int:
    """Largest a with max|w| * 2**a <= 127 (weights become int8 / 2**a)."""
    m = float(w.detach().abs().max())
    return int(math.floor(math.log2(127.0 / m))) if m > 0 else 7


class QRowLSTM(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int = 2):
        super().__init__()
        self.n_in, self.hidden, self.n_out = n_in, hidden, n_out
        k = 1.0 / math.sqrt(n_in + hidden)
        self.w = nn.Parameter(torch.empty(4 * hidden, n_in + hidden).uniform_(-k, k))
        b = torch.zeros(4 * hidden)
        b[hidden:2 * hidden] = 1.0  # forget gate open at start
        self.b = nn.Parameter(b)
        self.head_w = nn.Parameter(torch.zeros(n_out, hidden))
        self.head_b = nn.Parameter(torch.zeros(n_out))
        self.quantized = False

    # -- fake quantisation helpers ------------------------------------------------------------
    def _qw(self, w, b):
        a = weight_exponent(w)
        wq = _ste(w, torch.clamp(torch.round(w * 2 ** a), -127, 127) / 2 ** a)
        bq = _ste(b, torch.round(b * 2 ** (a + 7)) / 2 ** (a + 7))
        return wq, bq

    def hidden_states(self, x: torch.Tensor, every_step: bool = True) -> torch.Tensor:
        """x: (B, T, n_in) in int8 units / 128 -> h of every step (B, T, H), or the last (B, H)."""
        q = self.quantized
        w, b = self._qw(self.w, self.b) if q else (self.w, self.b)
        wh_t = w[:, self.n_in:].t()
        xz = torch.matmul(x, w[:, : self.n_in].t()) + b  # input part for all steps at once
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        outs = []
        # unbind, not xz[:, t]: indexing makes autograd zero-fill a (B, T, 4H) tensor per step
        for xz_t in xz.unbind(1):
            h, c = self._cell(xz_t + h @ wh_t, c)
            if every_step:
                outs.append(h)
        return torch.stack(outs, dim=1) if every_step else h

    def _cell(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM update from gate pre-activations ``z``, with the integer coder's roundings."""
        hid, q = self.hidden, self.quantized
        if q:
            z = _ste(z, torch.clamp(torch.round(z * 16), -LUT_HALF, LUT_HALF) / 16)
        zi, zf, zg, zo = z.split(hid, dim=1)
        i, f, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.sigmoid(zo)
        g = torch.tanh(zg)
        if q:
            i = _ste(i, torch.round(i * 128) / 128)
            f = _ste(f, torch.round(f * 128) / 128)
            o = _ste(o, torch.round(o * 128) / 128)
            g = _ste(g, torch.clamp(torch.round(g * 128), -127, 127) / 128)
        c = f * c + i * g
        if not q:
            return o * torch.tanh(c), c
        lim = C_CLAMP / 2 ** C_FRAC
        c = _ste(c, torch.clamp(torch.round(c * 2 ** C_FRAC) / 2 ** C_FRAC, -lim, lim))
        kc = torch.clamp(torch.floor(c * 32), -LUT_HALF, LUT_HALF) / 32
        tc = _ste(torch.tanh(c), torch.clamp(torch.round(torch.tanh(kc) * 128), -127, 127) / 128)
        h = o * tc
        return _ste(h, torch.round(h * 128) / 128), c

    def head(self, h: torch.Tensor) -> torch.Tensor:
        hw, hb = self._qw(self.head_w, self.head_b) if self.quantized else (self.head_w, self.head_b)
        return h @ hw.t() + hb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, n_in) in int8 units / 128. Returns head outputs (B, T, n_out)."""
        return self.head(self.hidden_states(x))

    # -- export ----------------------------------------------------------------------------------
    def export_arrays(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            a = weight_exponent(self.w)
            ao = weight_exponent(self.head_w)
            sig, tanh_g, tanh_c = make_luts()
            return {
                "lstm_w": torch.clamp(torch.round(self.w * 2 ** a), -127, 127).numpy().astype(np.int8),
                "lstm_b": torch.round(self.b * 2 ** (a + 7)).numpy().astype(np.int64),
                "lstm_shift": np.array(a + 3, np.int64),
                "head_w": torch.clamp(torch.round(self.head_w * 2 ** ao), -127, 127).numpy().astype(np.int8),
                "head_b": torch.round(self.head_b * 2 ** (ao + 7)).numpy().astype(np.int64),
                "head_shift": np.array(ao + 7, np.int64),
                "lut_sig": sig, "lut_tanh_g": tanh_g, "lut_tanh_c": tanh_c,
            }
