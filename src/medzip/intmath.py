"""Small exact integer helpers shared by the predictors (numba, no fast-math)."""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def log2_q3(a):
    """floor-ish 8*log2(a) for integer a >= 1, piecewise linear in the mantissa.

    frexp, a multiply by a power of two and floor are exact in IEEE-754, so the result is the
    same integer on every machine.
    """
    m, e = math.frexp(float(a))
    return 8 * (e - 1) + int(math.floor((m * 2.0 - 1.0) * 8.0))


def solve_normal_equations(ata: np.ndarray, atb: np.ndarray, ridge: float = 1e-6) -> list[float]:
    """Solve (A^T A) c = A^T b with Gaussian elimination in Python floats.

    Deliberately not LAPACK: the encoder's fitted coefficients must not depend on which BLAS or
    instruction set the machine has, so that encoding is reproducible byte for byte.
    """
    n = len(atb)
    scale = [math.sqrt(float(ata[i, i])) or 1.0 for i in range(n)]
    m = [[float(ata[i, j]) / (scale[i] * scale[j]) for j in range(n)] + [float(atb[i]) / scale[i]]
         for i in range(n)]
    for i in range(n):
        m[i][i] += ridge
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        p = m[col][col]
        if abs(p) < 1e-12:
            continue
        for r in range(n):
            if r != col and m[r][col] != 0.0:
                f = m[r][col] / p
                row, src = m[r], m[col]
                for c in range(col, n + 1):
                    row[c] -= f * src[c]
    return [(m[i][n] / m[i][i] if abs(m[i][i]) >= 1e-12 else 0.0) / scale[i] for i in range(n)]
