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

    def __init__(self, prior: np.ndarray | None = None, vmax: int | None = None,
                 floor: int = 0):
        self.vmax = vmax
        # censored coders: the lowest value a coded voxel can take (medzip-blend version 5: the
        # floor inside a padding mask's field of view); 0 is the volume's floor
        self.floor = int(floor) if vmax is not None else 0
        if not 0 <= self.floor <= (vmax or 0):
            raise ValueError("censoring floor outside the value range")
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
        for b in np.flatnonzero(_adapt_counts(self.counts, buckets, symbols)).tolist():
            self._models.pop(b, None)
        if esc_lengths.size:
            self.esc_counts += INCREMENT * np.bincount(esc_lengths - 1, minlength=ESC_ALPHABET)
            if self.esc_counts.sum() > LIMIT:
                self.esc_counts = (self.esc_counts + 1) >> 1
            self._esc_model = None

    # -- one wavefront step ----------------------------------------------------------------------
    # Order of the coding calls (the stream depends on it): the unbounded voxels' coarse symbols
    # bucket by bucket (ascending; step order within a bucket), then the bounded voxels' (see
    # _folded_models), the escapes, and the low bits of all voxels in step order. The index work
    # per step (sorting, grouping, splitting) runs in numba kernels: one call per step.
    def encode_step(self, enc, r: np.ndarray, buckets: np.ndarray,
                    mu: np.ndarray | None = None) -> None:
        censored, vmax, mu_ = self._censoring(mu)
        if self.floor:  # the residual from the prediction moved into [floor, vmax]
            r = r + (mu - self.floor) - mu_
        q, sym, low, low_size = _encode_symbols(r, buckets, mu_, vmax, censored)
        order, group_bucket, group_end, bounded, keys = _bucket_groups(buckets, mu_, vmax,
                                                                       censored)
        start = 0
        for b, end in zip(group_bucket.tolist(), group_end.tolist()):
            enc.encode(sym[order[start:end]], self._model(b))
            start = end
        if bounded.size:
            for group, model, rows in self._folded_models(bounded, keys):
                if rows is None:
                    enc.encode(sym[group], model)
                else:
                    enc.encode(sym[group], model, rows)
        esc_len = self._encode_escapes(enc, q, sym)
        sel = low_size > 1
        if sel.any():
            enc.encode(low[sel], _uniform_family, low_size[sel])
        self._adapt(buckets, sym, esc_len)

    def decode_step(self, dec, buckets: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        censored, vmax, mu_ = self._censoring(mu)
        sym = np.zeros(buckets.size, dtype=np.int32)
        order, group_bucket, group_end, bounded, keys = _bucket_groups(buckets, mu_, vmax,
                                                                       censored)
        start = 0
        for b, end in zip(group_bucket.tolist(), group_end.tolist()):
            sym[order[start:end]] = dec.decode(self._model(b), end - start)
            start = end
        if bounded.size:
            for group, model, rows in self._folded_models(bounded, keys):
                if rows is None:
                    sym[group] = dec.decode(model, group.size)
                else:
                    sym[group] = dec.decode(model, rows)
        q = sym.astype(np.int64) - (Q + 1)
        esc_len = self._decode_escapes(dec, q, sym)
        lmin, low_size = _low_sizes(q, buckets, mu_, vmax, censored)
        sel = low_size > 1
        low = np.zeros(buckets.size, dtype=np.int64)
        if sel.any():
            low[sel] = dec.decode(_uniform_family, low_size[sel])
        self._adapt(buckets, sym, esc_len)
        r = (q << SHIFTS[buckets]) + low + lmin
        if self.floor:  # back to the residual from the caller's prediction
            r += mu_ - (mu - self.floor)
        return r

    def _censoring(self, mu):
        """``(censored, vmax, mu)`` as the kernels take them (0 and an empty array when unused).

        With a floor, values and predictions are taken relative to it and a prediction below it
        is raised to it (a coded voxel never lies below): the kernels then see the range
        [0, vmax - floor], and the residual coded is the one from that prediction."""
        if self.vmax is None or mu is None:
            return False, 0, _NO_MU
        if self.floor:
            return True, int(self.vmax) - self.floor, np.maximum(mu, self.floor) - self.floor
        return True, int(self.vmax), mu

    # -- censoring at the volume's floor and ceiling --------------------------------------------
    def _folded_models(self, bounded, keys):
        """Coding calls for the bounded voxels (``bounded``: their positions in step order,
        ``keys``: their (bucket, lowest, highest symbol) keys): ``(positions, model, rows)``.

        Each voxel's distribution is its bucket's counts with the impossible symbols folded onto
        the bounds. A (bucket, bounds) combination shared by at least SHARED_FOLD voxels of the
        step (padding, air at the CT floor) gets one model, in ascending key order; the other
        voxels follow in step order, each with its own row (constriction's per-symbol family).
        """
        big_keys, big_end, big_pos, rest, rest_keys, rest_idx = _fold_groups(bounded, keys)
        calls = []
        start = 0
        rows = _fold_rows(self.counts, big_keys)
        for u, end in enumerate(big_end.tolist()):
            calls.append((big_pos[start:end], _cat(rows[u], perfect=False), None))
            start = end
        if rest.size:
            # one folded row per distinct key, repeated for its voxels
            calls.append((rest, _cat_family, _fold_rows(self.counts, rest_keys)[rest_idx]))
        return calls

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


_NO_MU = np.zeros(0, np.int64)


@numba.njit(cache=True)
def _encode_symbols(r, buckets, mu, vmax, censored):
    """Per voxel: coarse value q, its symbol, and the low bits as (offset, count of values):
    2**s values, or for a censored coder only those of the bound symbols that stay in range."""
    n = r.size
    q = np.empty(n, np.int64)
    sym = np.empty(n, np.int32)
    low = np.empty(n, np.int32)
    size = np.empty(n, np.int32)
    for i in range(n):
        s = SHIFTS[buckets[i]]
        qi = r[i] >> s
        q[i] = qi
        sym[i] = min(max(qi + (Q + 1), 0), ALPHABET - 1)
        lmin, lmax = _low_bounds(qi, s, mu, vmax, censored, i)
        low[i] = r[i] - (qi << s) - lmin
        size[i] = lmax - lmin + 1
    return q, sym, low, size


@numba.njit(cache=True)
def _low_sizes(q, buckets, mu, vmax, censored):
    """Decoder side of _encode_symbols' low-bit ranges: ``(first allowed value, count)``."""
    n = q.size
    lmin = np.empty(n, np.int64)
    size = np.empty(n, np.int32)
    for i in range(n):
        lo, hi = _low_bounds(q[i], SHIFTS[buckets[i]], mu, vmax, censored, i)
        lmin[i] = lo
        size[i] = hi - lo + 1
    return lmin, size


@numba.njit(cache=True, inline="always")
def _low_bounds(qi, s, mu, vmax, censored, i):
    lmin = 0
    lmax = (np.int64(1) << s) - 1
    if censored:
        m = mu[i]
        qlo = (-m) >> s
        qhi = (vmax - m) >> s
        if qi == qlo:
            lmin = -m - (qlo << s)
        if qi == qhi:
            lmax = vmax - m - (qhi << s)
    return lmin, lmax


@numba.njit(cache=True, inline="always")
def _sym_bounds(m, s, vmax):
    """The lowest and highest coarse symbols a censored voxel with prediction m can take."""
    slo = min(max(((-m) >> s) + (Q + 1), 0), ALPHABET - 1)
    shi = min(max(((vmax - m) >> s) + (Q + 1), 0), ALPHABET - 1)
    return slo, shi


@numba.njit(cache=True)
def _bucket_groups(buckets, mu, vmax, censored):
    """Unbounded voxels sorted by bucket (stable: step order within a bucket) as
    ``(order, bucket of each group, end of each group in order)``, then the positions of the
    bounded voxels (a bound cuts into the table's range) in step order and their keys
    ``(bucket * ALPHABET + lowest symbol) * ALPHABET + highest symbol``."""
    n = buckets.size
    key = np.full(n, -1, np.int64)  # -1: unbounded
    count = np.zeros(N_BUCKETS, np.int64)
    n_bounded = 0
    for i in range(n):
        b = buckets[i]
        if censored:
            slo, shi = _sym_bounds(mu[i], SHIFTS[b], vmax)
            if slo > 0 or shi < ALPHABET - 1:
                key[i] = (b * ALPHABET + slo) * ALPHABET + shi
                n_bounded += 1
                continue
        count[b] += 1
    n_groups = 0
    for b in range(N_BUCKETS):
        if count[b]:
            n_groups += 1
    group_bucket = np.empty(n_groups, np.int64)
    group_end = np.empty(n_groups, np.int64)
    next_slot = np.empty(N_BUCKETS, np.int64)
    g = 0
    total = 0
    for b in range(N_BUCKETS):
        next_slot[b] = total
        if count[b]:
            total += count[b]
            group_bucket[g] = b
            group_end[g] = total
            g += 1
    order = np.empty(total, np.int64)
    positions = np.empty(n_bounded, np.int64)
    keys = np.empty(n_bounded, np.int64)
    k = 0
    for i in range(n):
        if key[i] >= 0:
            positions[k] = i
            keys[k] = key[i]
            k += 1
        else:
            b = buckets[i]
            order[next_slot[b]] = i
            next_slot[b] += 1
    return order, group_bucket, group_end, positions, keys


@numba.njit(cache=True)
def _fold_groups(bounded, keys):
    """Bounded voxels (positions ``bounded``, keys ``keys`` from _bucket_groups) grouped by key.

    Returns the keys shared by at least SHARED_FOLD voxels (ascending) with the end of each
    one's voxels in ``big_pos`` (step order within a key), then the other voxels in step order
    as positions, the distinct keys among them and each one's index into those keys."""
    n = bounded.size
    hi_ = keys % ALPHABET
    lo_ = (keys // ALPHABET) % ALPHABET
    b_ = keys // (ALPHABET * ALPHABET)
    # stable sort by (bucket, lowest, highest): three counting-sort passes, least significant first
    by_key = np.arange(n)
    by_key = _counting_pass(hi_, by_key, ALPHABET)
    by_key = _counting_pass(lo_, by_key, ALPHABET)
    by_key = _counting_pass(b_, by_key, N_BUCKETS)
    shared = np.zeros(n, np.bool_)
    rest_key_id = np.empty(n, np.int64)
    big_keys = np.empty(n, np.int64)
    rest_keys = np.empty(n, np.int64)
    big_end = np.empty(n, np.int64)
    big_pos = np.empty(n, np.int64)
    n_big = n_big_keys = n_rest_keys = 0
    a = 0
    while a < n:
        key = keys[by_key[a]]
        e = a + 1
        while e < n and keys[by_key[e]] == key:
            e += 1
        if e - a >= SHARED_FOLD:
            for j in range(a, e):
                shared[by_key[j]] = True
                big_pos[n_big] = bounded[by_key[j]]
                n_big += 1
            big_keys[n_big_keys] = key
            big_end[n_big_keys] = n_big
            n_big_keys += 1
        else:
            for j in range(a, e):
                rest_key_id[by_key[j]] = n_rest_keys
            rest_keys[n_rest_keys] = key
            n_rest_keys += 1
        a = e
    rest = np.empty(n - n_big, np.int64)
    rest_idx = np.empty(n - n_big, np.int64)
    j = 0
    for k in range(n):
        if not shared[k]:
            rest[j] = bounded[k]
            rest_idx[j] = rest_key_id[k]
            j += 1
    return (big_keys[:n_big_keys], big_end[:n_big_keys], big_pos[:n_big], rest,
            rest_keys[:n_rest_keys], rest_idx)


@numba.njit(cache=True)
def _counting_pass(digit, order, radix):
    """``order`` stably re-sorted by ``digit[order]`` (values in [0, radix))."""
    count = np.zeros(radix + 1, np.int64)
    for k in range(order.size):
        count[digit[order[k]] + 1] += 1
    for d in range(radix):
        count[d + 1] += count[d]
    out = np.empty_like(order)
    for k in range(order.size):
        d = digit[order[k]]
        out[count[d]] = order[k]
        count[d] += 1
    return out


@numba.njit(cache=True)
def _fold_rows(counts, keys):
    """float64 rows (exact integers), one per key (bucket, lowest, highest symbol): the bucket's
    counts with the entries outside [lowest, highest] moved onto them."""
    width = counts.shape[1]
    out = np.zeros((keys.size, width), np.float64)
    for i in range(keys.size):
        hi = keys[i] % width
        lo = (keys[i] // width) % width
        row = counts[keys[i] // (width * width)]
        below = 0
        for k in range(lo):
            below += row[k]
        above = 0
        for k in range(hi + 1, width):
            above += row[k]
        for k in range(lo, hi + 1):
            out[i, k] = row[k]
        out[i, lo] += below
        out[i, hi] += above
    return out


@numba.njit(cache=True)
def _adapt_counts(counts, buckets, symbols):
    """Add INCREMENT per coded symbol; halve a table whose total passes LIMIT. Returns the
    touched buckets (their cached models are stale)."""
    touched = np.zeros(counts.shape[0], np.bool_)
    for i in range(buckets.size):
        counts[buckets[i], symbols[i]] += INCREMENT
        touched[buckets[i]] = True
    for b in range(counts.shape[0]):
        if touched[b] and counts[b].sum() > LIMIT:
            for k in range(counts.shape[1]):
                counts[b, k] = (counts[b, k] + 1) >> 1
    return touched


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
