"""Reference integer kernels for tests: one LSTM step for one sequence, written plainly.

The coder's kernels (medzip.intlstm.cell_update inside batched loops, predictors/paper.py's
run_sequence) must give the same integers as this step-by-step version.
"""
from __future__ import annotations

import numba
import numpy as np

from medzip.intlstm import cell_update


@numba.njit
def lstm_cell(x, h, c, w, b, shift, sig, tanh_g, tanh_c, acc):
    """One step for one sequence, in place: x (I,), h (H,), c (H,), w (4H, I+H).

    Gate order i, f, g, o. ``acc`` is a (4H,) int64 scratch buffer.
    """
    n_in = x.size
    hid = h.size
    for j in range(4 * hid):
        s = np.int64(b[j])
        for k in range(n_in):
            s += w[j, k] * x[k]
        for k in range(hid):
            s += w[j, n_in + k] * h[k]
        acc[j] = s
    cell_update(acc, h, c, shift, sig, tanh_g, tanh_c)
