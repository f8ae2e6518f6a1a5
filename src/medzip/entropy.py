"""Residual coding with integer adaptive frequency tables on constriction's range coder.

Every voxel arrives with an integer residual ``r`` and a *scale bucket* ``b`` chosen by the
predictor (bucket b means a residual scale of about ``2**((b - 4) / 2)``). The residual is split
into a coarse part ``q = r >> s_b`` coded with bucket b's adaptive table, and ``s_b`` low bits
coded uniformly; ``s_b`` keeps every table's working scale at 8..16 units, so one small alphabet
serves 8-bit MR and 16-bit noise alike. Coarse values outside +-Q are escaped (Elias-gamma
length through an adaptive table, then raw bits).

Determinism: tables are integer counts updated by integer rules after every wavefront step, in
the same order on both sides. constriction turns counts into its fixed-point model using only
IEEE-754 basic arithmetic on exactly representable integers, so encoder and decoder build the
same model on every platform. No transcendental function touches the probability path.
"""
from __future__ import annotations

import constriction
import numba
import numpy as np

N_BUCKETS = 40
Q = 96
ALPHABET = 2 * Q + 3  # escape-low, -Q..Q, escape-high
ESC_ALPHABET = 40  # Elias-gamma lengths 1..40
INCREMENT = 32
LIMIT = 1 << 16  # halve a table when its total passes this: keeps it adaptive
# Starting counts of the escape-length table: escapes are rare and short, so lengths 1..8
# (values up to 255 beyond the table) start 16x likelier than longer ones.
ESC_SHORT_LENGTHS = 8
ESC_SHORT_PRIOR = 16
SHARED_FOLD = 32  # censored coding: voxels of a step sharing one folded distribution get one model

_cat = constriction.stream.model.Categorical
_uniform_family = constriction.stream.model.Uniform()
_cat_family = constriction.stream.model.Categorical(perfect=False)  # one row per symbol

# Low-bit shift per bucket: keeps sigma / 2**s in [8, 16).
SHIFTS = np.maximum(0, (np.arange(N_BUCKETS) - 4) // 2 - 3).astype(np.int64)


def default_prior() -> np.ndarray:
    """Integer starting counts: a peaked, heavy-tailed shape (adaptation takes over quickly)."""
    q = np.arange(-Q, Q + 1, dtype=np.int64)
    body = 1 + (1 << 16) // (64 + q * q)
    row = np.concatenate(([4], body, [4]))
    return np.tile(row, (N_BUCKETS, 1))


class ResidualCoder:
    """Adaptive state shared by the encode and decode paths of one chunk.

    With ``vmax`` set (a *censored* coder, requested by predictors with ``censored = True``;
    streams of other predictors are coded exactly as before), every voxel's value is known to
    lie in ``[0, vmax]``: given its prediction ``mu``, coarse symbols below ``(-mu) >> s`` or
    above ``(vmax - mu) >> s`` are impossible, so their counts are added to those boundary
    symbols (the floor gets all the mass at or below it), and the low bits of a boundary
    symbol are coded over the values that remain possible.
    """

    def __init__(self, prior: np.ndarray | None = None, vmax: int | None = None):
        self.vmax = vmax
        self.counts = (default_prior() if prior is None else np.array(prior, dtype=np.int64)).copy()
        if self.counts.shape != (N_BUCKETS, ALPHABET):
            raise ValueError("prior table has the wrong shape")
        self.esc_counts = np.full(ESC_ALPHABET, 1, dtype=np.int64)
        self.esc_counts[:ESC_SHORT_LENGTHS] = ESC_SHORT_PRIOR
        self._models: dict[int, object] = {}
        self._esc_model = None

    # -- models -----------------------------------------------------------------------------
    def _model(self, b: int):
        m = self._models.get(b)
        if m is None:
            m = _cat(self.counts[b].astype(np.float64), perfect=False)
            self._models[b] = m
        return m

    def _esc(self):
        if self._esc_model is None:
            self._esc_model = _cat(self.esc_counts.astype(np.float64), perfect=False)
        return self._esc_model

    def _adapt(self, buckets: np.ndarray, symbols: np.ndarray, esc_lengths: np.ndarray) -> None:
        hist = np.bincount(buckets * ALPHABET + symbols, minlength=N_BUCKETS * ALPHABET)
        hist = hist.reshape(N_BUCKETS, ALPHABET)
        touched = np.flatnonzero(hist.any(axis=1))
        self.counts[touched] += INCREMENT * hist[touched]
        totals = self.counts[touched].sum(axis=1)
        big = touched[totals > LIMIT]
        self.counts[big] = (self.counts[big] + 1) >> 1
        for b in touched:
            self._models.pop(int(b), None)
        if esc_lengths.size:
            self.esc_counts += INCREMENT * np.bincount(esc_lengths - 1, minlength=ESC_ALPHABET)
            if self.esc_counts.sum() > LIMIT:
                self.esc_counts = (self.esc_counts + 1) >> 1
            self._esc_model = None

    # -- symbol mapping ---------------------------------------------------------------------
    @staticmethod
    def _split(r: np.ndarray, s: np.ndarray):
        q = r >> s
        low = r - (q << s)
        sym = np.clip(q + (Q + 1), 0, ALPHABET - 1)
        return q, low, sym

    def encode_step(self, enc, r: np.ndarray, buckets: np.ndarray,
                    mu: np.ndarray | None = None) -> None:
        s = SHIFTS[buckets]
        q, low, sym = self._split(r, s)
        bounds = self._bounds(mu, s)
        free = slice(None) if bounds is None else ~bounds[4]
        order = np.argsort(buckets[free], kind="stable")
        sb, ss = buckets[free][order], sym[free][order]
        cuts = np.flatnonzero(np.diff(sb)) + 1
        if sb.size:
            for b, group in zip(sb[np.concatenate(([0], cuts))], np.split(ss, cuts)):
                enc.encode(group.astype(np.int32), self._model(int(b)))
        if bounds is not None and bounds[4].any():
            sel = np.flatnonzero(bounds[4])
            for group, model, rows in self._folded_models(buckets[sel], bounds[2][sel],
                                                          bounds[3][sel]):
                if rows is None:
                    enc.encode(sym[sel[group]].astype(np.int32), model)
                else:
                    enc.encode(sym[sel[group]].astype(np.int32), model, rows)
        esc_len = self._encode_escapes(enc, q, sym)
        if bounds is None:
            self._encode_low(enc, low, s)
        else:
            lmin, size = _low_range(q, s, bounds)
            self._encode_low_sized(enc, low - lmin, size)
        self._adapt(buckets, sym, esc_len)

    def decode_step(self, dec, buckets: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        s = SHIFTS[buckets]
        bounds = self._bounds(mu, s)
        idx = np.arange(buckets.size) if bounds is None else np.flatnonzero(~bounds[4])
        fb = buckets[idx]
        order = np.argsort(fb, kind="stable")
        sb = fb[order]
        cuts = np.flatnonzero(np.diff(sb)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [sb.size]))
        sym_sorted = np.empty(sb.size, dtype=np.int64)
        for b, a, e in zip(sb[starts] if sb.size else [], starts, ends):
            sym_sorted[a:e] = dec.decode(self._model(int(b)), int(e - a))
        sym = np.empty(buckets.size, dtype=np.int64)
        sym[idx[order]] = sym_sorted
        if bounds is not None and bounds[4].any():
            sel = np.flatnonzero(bounds[4])
            for group, model, rows in self._folded_models(buckets[sel], bounds[2][sel],
                                                          bounds[3][sel]):
                if rows is None:
                    sym[sel[group]] = dec.decode(model, group.size)
                else:
                    sym[sel[group]] = dec.decode(model, rows)
        q = sym - (Q + 1)
        esc_len = self._decode_escapes(dec, q, sym)
        if bounds is None:
            low = self._decode_low(dec, s)
        else:
            lmin, size = _low_range(q, s, bounds)
            low = self._decode_low_sized(dec, size) + lmin
        self._adapt(buckets, sym, esc_len)
        return (q << s) + low

    # -- censoring at the volume's floor and ceiling --------------------------------------------
    def _bounds(self, mu, s):
        """(qlo, qhi, symlo, symhi, bounded, low_min, low_max) or None (uncensored coder).

        ``low_min`` is the smallest low-bits value allowed in symbol qlo, ``low_max`` the
        largest in symbol qhi."""
        if self.vmax is None or mu is None:
            return None
        qlo = (-mu) >> s
        qhi = (self.vmax - mu) >> s
        slo = np.clip(qlo + (Q + 1), 0, ALPHABET - 1)
        shi = np.clip(qhi + (Q + 1), 0, ALPHABET - 1)
        return (qlo, qhi, slo, shi, (slo > 0) | (shi < ALPHABET - 1),
                -mu - (qlo << s), self.vmax - mu - (qhi << s))

    def _folded_models(self, buckets, slo, shi):
        """Coding calls for the bounded voxels: ``(positions, model, rows)``.

        Each voxel's distribution is its bucket's counts with the impossible symbols folded onto
        the bounds. A (bucket, bounds) combination shared by at least SHARED_FOLD voxels of the
        step (padding, air at the CT floor) gets one model, in ascending key order; the other
        voxels follow in step order, each with its own row (constriction's per-symbol family).
        """
        key = (buckets * ALPHABET + slo) * ALPHABET + shi
        uniq, first, inv, cnt = np.unique(key, return_index=True, return_inverse=True,
                                          return_counts=True)
        calls = []
        big = cnt >= SHARED_FOLD
        if big.any():
            order = np.argsort(inv, kind="stable")
            ends = np.cumsum(cnt)
            for u in np.flatnonzero(big):
                row = _fold_rows(self.counts, buckets[first[u:u + 1]], slo[first[u:u + 1]],
                                 shi[first[u:u + 1]])[0]
                calls.append((order[ends[u] - cnt[u]:ends[u]], _cat(row, perfect=False), None))
        rest = np.flatnonzero(~big[inv])
        if rest.size:
            calls.append((rest, _cat_family, _fold_rows(self.counts, buckets[rest], slo[rest],
                                                         shi[rest])))
        return calls

    @staticmethod
    def _encode_low_sized(enc, low, size):
        sel = size > 1
        if sel.any():
            enc.encode(low[sel].astype(np.int32), _uniform_family, size[sel].astype(np.int32))

    @staticmethod
    def _decode_low_sized(dec, size):
        low = np.zeros(size.size, dtype=np.int64)
        sel = size > 1
        if sel.any():
            low[sel] = dec.decode(_uniform_family, size[sel].astype(np.int32))
        return low

    # -- escapes: q beyond +-Q ----------------------------------------------------------------
    def _encode_escapes(self, enc, q, sym):
        esc = np.flatnonzero((sym == 0) | (sym == ALPHABET - 1))
        if esc.size == 0:
            return esc
        qe = q[esc]
        e1 = np.where(qe < 0, -(Q + 1) - qe, qe - (Q + 1)) + 1  # >= 1
        n = _bit_length(e1)
        enc.encode((n - 1).astype(np.int32), self._esc())
        _encode_raw_bits(enc, e1 - (np.int64(1) << (n - 1)), n - 1)
        return n

    def _decode_escapes(self, dec, q, sym):
        esc = np.flatnonzero((sym == 0) | (sym == ALPHABET - 1))
        if esc.size == 0:
            return esc
        n = dec.decode(self._esc(), esc.size).astype(np.int64) + 1
        e1 = _decode_raw_bits(dec, n - 1) + (np.int64(1) << (n - 1))
        low_side = sym[esc] == 0
        q[esc] = np.where(low_side, -(Q + 1) - (e1 - 1), (Q + 1) + (e1 - 1))
        return n

    # -- uniform low bits -----------------------------------------------------------------------
    @staticmethod
    def _encode_low(enc, low, s):
        sel = s > 0
        if sel.any():
            enc.encode(low[sel].astype(np.int32), _uniform_family,
                       (np.int32(1) << s[sel].astype(np.int32)))

    @staticmethod
    def _decode_low(dec, s):
        low = np.zeros(s.size, dtype=np.int64)
        sel = s > 0
        if sel.any():
            low[sel] = dec.decode(_uniform_family, (np.int32(1) << s[sel].astype(np.int32)))
        return low


@numba.njit(cache=True)
def _fold_rows(counts, buckets, slo, shi):
    """float64 rows (exact integers): counts[b] with entries outside [slo, shi] moved onto them."""
    out = np.zeros((buckets.size, counts.shape[1]), np.float64)
    for i in range(buckets.size):
        row = counts[buckets[i]]
        lo = slo[i]
        hi = shi[i]
        below = 0
        for k in range(lo):
            below += row[k]
        above = 0
        for k in range(hi + 1, row.size):
            above += row[k]
        for k in range(lo, hi + 1):
            out[i, k] = row[k]
        out[i, lo] += below
        out[i, hi] += above
    return out


def _low_range(q, s, bounds):
    """Low bits of a censored voxel: the first allowed value and the count of allowed values."""
    qlo, qhi, _, _, _, low_min, low_max = bounds
    lmin = np.where(q == qlo, low_min, 0)
    lmax = np.where(q == qhi, low_max, (np.int64(1) << s) - 1)
    return lmin, lmax - lmin + 1


def _bit_length(v: np.ndarray) -> np.ndarray:
    # frexp is exact for integers below 2**53: exponent == bit length
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def _encode_raw_bits(enc, value: np.ndarray, nbits: np.ndarray) -> None:
    for k in range(3):  # up to 48 bits in 16-bit uniform pieces
        bits = np.clip(nbits - 16 * k, 0, 16)
        sel = bits > 0
        if not sel.any():
            break
        enc.encode(((value[sel] >> (16 * k)) & ((np.int64(1) << bits[sel]) - 1)).astype(np.int32),
                   _uniform_family, (np.int32(1) << bits[sel].astype(np.int32)))


def _decode_raw_bits(dec, nbits: np.ndarray) -> np.ndarray:
    value = np.zeros(nbits.size, dtype=np.int64)
    for k in range(3):
        bits = np.clip(nbits - 16 * k, 0, 16)
        sel = bits > 0
        if not sel.any():
            break
        part = dec.decode(_uniform_family, (np.int32(1) << bits[sel].astype(np.int32)))
        value[sel] |= part.astype(np.int64) << (16 * k)
    return value
