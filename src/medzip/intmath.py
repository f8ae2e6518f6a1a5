"""Small exact integer helpers shared by the predictors (numba, no fast-math)."""
from __future__ import annotations

import math

import numba
import numpy as np

from .forksafe import GUARD


@numba.njit(cache=True, inline="always")
def log2_q3(a):
    """floor-ish 8*log2(a) for integer a >= 1, piecewise linear in the mantissa.

    frexp, a multiply by a power of two and floor are exact in IEEE-754, so the result is the
    same integer on every machine.
    """
    m, e = math.frexp(float(a))
    return 8 * (e - 1) + int(math.floor((m * 2.0 - 1.0) * 8.0))


def solve_normal_equations(ata: np.ndarray, atb: np.ndarray, ridge: float = 1e-6) -> list[float]:
    """Solve (A^T A) c = A^T b with Gaussian elimination (partial pivoting) in float64.

    Deliberately not LAPACK: the encoder's fitted coefficients must not depend on which BLAS or
    instruction set the machine has, so that encoding is reproducible byte for byte. The numba
    kernel does the IEEE-754 basic operations in a fixed order (no fast-math, so no FMA
    contraction or reassociation): the same result as the same loops in plain Python, which is
    what this function was until the 42-coefficient wide class sets made the Python loops
    too slow.
    """
    return [float(v) for v in _eliminate(np.asarray(ata, np.int64), np.asarray(atb, np.int64),
                                         float(ridge))]


@numba.njit(cache=True)
def _eliminate(ata, atb, ridge):
    n = atb.size
    scale = np.empty(n)
    for i in range(n):
        s = math.sqrt(float(ata[i, i]))
        scale[i] = s if s != 0.0 else 1.0
    m = np.empty((n, n + 1))
    for i in range(n):
        for j in range(n):
            m[i, j] = float(ata[i, j]) / (scale[i] * scale[j])
        m[i, n] = float(atb[i]) / scale[i]
    for i in range(n):
        m[i, i] += ridge
    for col in range(n):
        piv = col  # the first row of largest magnitude
        for r in range(col + 1, n):
            if abs(m[r, col]) > abs(m[piv, col]):
                piv = r
        if piv != col:
            for c in range(n + 1):
                m[col, c], m[piv, c] = m[piv, c], m[col, c]
        p = m[col, col]
        if abs(p) < 1e-12:
            continue
        for r in range(n):
            if r != col and m[r, col] != 0.0:
                f = m[r, col] / p
                for c in range(col, n + 1):
                    m[r, c] -= f * m[col, c]
    out = np.empty(n)
    for i in range(n):
        out[i] = (m[i, n] / m[i, i] if abs(m[i, i]) >= 1e-12 else 0.0) / scale[i]
    return out


def exact_gram(a: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A^T A, A^T b)`` of integer columns, exactly, at BLAS speed where that is provable.

    With ``|values| <= m`` every product is at most ``m**2`` and every partial sum at most
    ``rows * m**2``; below 2**53 all of them are integers that float64 represents exactly, so
    the result does not depend on the BLAS's summation order, blocking or FMA use. (numpy's
    int64 matmul has no BLAS: it made the least-squares fits most of the encoder's serial time.)
    Otherwise plain int64 arithmetic.
    """
    m = max(int(np.abs(a).max(initial=0)), int(np.abs(target).max(initial=0)), 1)
    if a.shape[0] * m * m < (1 << 53):
        af, tf = a.astype(np.float64), target.astype(np.float64)
        with GUARD.blas():  # a threaded BLAS call: no pool may fork meanwhile (forksafe.py)
            g, h = af.T @ af, af.T @ tf
        return g.astype(np.int64), h.astype(np.int64)
    return a.T @ a, a.T @ target


@numba.njit(cache=True, inline="always")
def floor_div_clip(x, d, df, lim):
    """``min(max(x // d, -lim), lim)`` (floor division) for an int64 x, an integer divisor
    ``d >= 1`` passed also as ``df = float(d)``, and ``1 <= lim <= 1024``: one float division
    where the callers (network features clipped to int8, blend weights <= 1024) had an integer
    division or a reciprocal and two corrections.

    Exact: clamped first to +-lim*d (which leaves the clipped quotient unchanged), the numerator
    is below 2**51 in magnitude and a float64 integer; the true quotient t lies in [-lim, lim]
    and, when it is not an integer, at least 1/d away from one, while the correctly rounded
    quotient is within |t| * 2**-53 <= lim * 2**-53 < 1/d of t (as lim * d < 2**51). So rounding
    never reaches the next integer and its floor is the integer floor. Divisors of 2**40 and
    more (not reached by the callers) divide in integers.
    """
    if d >= (np.int64(1) << 40):
        return min(max(x // d, -lim), lim)
    bound = lim * d
    xc = min(max(x, -bound), bound)
    return np.int64(math.floor(float(xc) / df))
