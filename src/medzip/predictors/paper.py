"""The published MedZip predictor (Nagoor et al., ICPR 2020), integer-exact: ``medzip-paper``.

Each voxel is predicted from a causal "pyramid" of 191 already-decoded voxels: 1x1 in slice
z-3, 5x5 in z-2, 9x9 in z-1 (centred on the voxel's y, x) and the causal half of a 13x13 window
in the current slice (the 6 rows above, then the 6 voxels to the left), oldest slice first and
raster order within a slice. Values are normalised to [-1, 1] by the volume's range (stored in
the stream), quantised to int8 (``q / 128``) and fed one per step to a single LSTM layer of 128
units; a linear head on the last state predicts the normalised voxel, which is scaled back and
rounded. The residual scale bucket comes from the magnitudes of neighbouring residuals (as in
ls3d), so the adaptive residual coder plays the role of the paper's adaptive arithmetic coder.

Wavefront: models trained now use slope 7 and lag 33 (``t = x + 7y + 33z``, scheduling.py), so
the whole published window is decoded when a voxel is predicted (row y-1 up to x+6 needs slope
> 6; the 9x9 block of z-1 needs lag > 4 + 4*slope). Each model file records its slope and the
predictor runs the wavefront it was trained for: the first shipped model (slope 2, kept as
``models/medzip-paper@094ecf9c1918.npz`` for old streams) read 9 upper-right window
voxels that slope 2 had not decoded yet as the rightmost decoded voxel of their row.

Everything on the coding path is integer arithmetic in numba (no fast-math). The recurrent
product is an int16 x int16 dot product accumulated in int32 (|sum| <= 128 * 127 * 127 < 2**21,
no overflow), so outputs do not depend on batch composition, threads or CPU.
"""
from __future__ import annotations

import struct

import numba
import numpy as np

from ..errors import UnsupportedInputError
from ..intlstm import C_CLAMP, C_FRAC, LUT_HALF, QuantLSTMParams
from ..scheduling import PaddedGeometry
from .base import PredictorBase, ResidualChunk
from .contexts import activity_bucket, residual_activity
from .models import ModelFile

SLOPE = 7  # wavefront slope new models are trained for: t = x + SLOPE * y + lag * z


def lag_for(slope: int) -> int:
    """Smallest lag that decodes the 9x9 block of z-1 in time: dx + slope*dy < lag."""
    return 4 + 4 * slope + 1


LAG = lag_for(SLOPE)  # 33
PYRAMID = ((3, 0), (2, 2), (1, 4))  # (slices back, half width) of the past-slice windows
CUR_HALF = 6  # 13x13 current-slice window
MAX_HEAD_SHIFT = 24  # with MAX_SPAN: the de-normalisation product stays below 2**63
MAX_SPAN = 1 << 34  # value ranges are below 2**33 (volume_codec.MAX_RANGE_BITS)
_PARAMS = struct.Struct("<Bqq")
PARAMS_VERSION = 1


def pyramid_offsets(slope: int = SLOPE) -> tuple[list, list]:
    """(window offsets, offsets actually read) as (dz, dy, dx), in the published order.

    An in-slice offset that the wavefront has not decoded yet (dx + slope*dy >= 0 on a row
    above) reads the rightmost decoded voxel of the same row instead.
    """
    win = []
    for back, r in PYRAMID:
        win += [(-back, dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    win += [(0, dy, dx) for dy in range(-CUR_HALF, 0) for dx in range(-CUR_HALF, CUR_HALF + 1)]
    win += [(0, 0, dx) for dx in range(-CUR_HALF, 0)]
    src = [(dz, dy, min(dx, -slope * dy - 1)) if dz == 0 and dy < 0 else (dz, dy, dx)
           for dz, dy, dx in win]
    return win, src


SEQ_LEN = len(pyramid_offsets()[0])  # 191


def source_offsets(geom: PaddedGeometry, slope: int = SLOPE) -> np.ndarray:
    return np.array([dz * geom.plane + dy * geom.row + dx
                     for dz, dy, dx in pyramid_offsets(slope)[1]], np.int64)


def load_paper_net(model: ModelFile) -> QuantLSTMParams:
    if model.meta.get("kind") != "paper":
        raise UnsupportedInputError(f"model '{model.name}' is not a MedZip-paper model")
    try:
        net = QuantLSTMParams(model.arrays)
    except (KeyError, ValueError) as exc:
        raise UnsupportedInputError(f"model '{model.name}' is malformed ({exc})") from None
    if (net.inputs != 1 or net.head_w.shape != (1, net.hidden) or net.head_shift > MAX_HEAD_SHIFT
            or model.meta.get("seq_len") != SEQ_LEN or model.meta.get("slope") not in (2, 7)
            or model.meta.get("lag") != lag_for(model.meta.get("slope"))):
        raise UnsupportedInputError(f"model '{model.name}' does not fit this MedZip-paper coder")
    return net


class PaperPredictor(PredictorBase):
    name = "medzip-paper"
    lag = LAG
    pad = CUR_HALF
    zpad = PYRAMID[0][0]

    def __init__(self, model: ModelFile, vol4: np.ndarray | None = None, *,
                 lo: int | None = None, hi: int | None = None):
        self.model = model
        self.name = model.name
        self.net = load_paper_net(model)
        self.slope = int(model.meta["slope"])  # the wavefront this model was trained for
        self.lag = lag_for(self.slope)
        if vol4 is not None:
            lo, hi = int(vol4.min()), int(vol4.max())
        if lo is None or hi is None:
            raise ValueError("PaperPredictor needs a volume or its value range")
        self.lo, self.hi = lo, max(hi, lo + 1)  # constant volumes never reach a predictor
        n = self.net
        # int16 copies for the recurrent dot product; |w|, |h| <= 127 is checked on load
        self._wx = np.ascontiguousarray(n.w[:, 0])
        self._wh = np.ascontiguousarray(n.w[:, 1:].astype(np.int16))
        self._hw = np.ascontiguousarray(n.head_w[0])

    # -- stream side ------------------------------------------------------------------------
    def params(self) -> bytes:
        return _PARAMS.pack(PARAMS_VERSION, self.lo, self.hi)

    @classmethod
    def from_params(cls, model: ModelFile, blob: bytes) -> "PaperPredictor":
        if len(blob) != _PARAMS.size:
            raise ValueError("bad medzip-paper parameter block")
        version, lo, hi = _PARAMS.unpack(blob)
        if version != PARAMS_VERSION or not 0 <= lo < hi <= lo + MAX_SPAN:
            raise ValueError("bad medzip-paper parameter block")
        return cls(model, lo=lo, hi=hi)

    def header_entry(self) -> dict:
        return {"name": self.model.name, "sha256": self.model.sha256}

    def start_chunk(self, geom: PaddedGeometry, vmax: int) -> "_PaperChunk":
        return _PaperChunk(self, geom, vmax)

    # -- inference on explicit voxels (coder, tests, benchmarks) ----------------------------
    def predict_voxels(self, vol: np.ndarray, flat: np.ndarray, src: np.ndarray,
                       vmax: int) -> np.ndarray:
        n = self.net
        mu = np.empty(flat.size, np.int64)
        _paper_predict(vol, flat, src, self.lo, self.hi - self.lo, vmax, self._wx, self._wh,
                       n.b, n.shift, n.sig, n.tanh_g, n.tanh_c, self._hw, int(n.head_b[0]),
                       n.head_shift, mu)
        return mu


class _PaperChunk(ResidualChunk):
    """Stateless apart from the coded residuals (they set the scale buckets)."""

    def __init__(self, pred: PaperPredictor, geom: PaddedGeometry, vmax: int):
        super().__init__(geom, vmax)
        if geom.pad < PaperPredictor.pad or geom.zpad < PaperPredictor.zpad:
            raise ValueError("chunk padding too small for the MedZip-paper neighbourhood")
        self.p = pred
        self.src = source_offsets(geom, pred.slope)
        self.row, self.plane, self.vmax = geom.row, geom.plane, vmax

    def predict(self, vol, flat, zloc):
        mu = self.p.predict_voxels(vol, flat, self.src, self.vmax)
        bucket = np.empty(flat.size, np.int64)
        _residual_buckets(self.res, flat, zloc, self.row, self.plane, bucket)
        return mu, bucket

    def update(self, vol, flat, zloc, residual):
        self.res[flat] = residual


# -- kernels ------------------------------------------------------------------------------------
@numba.njit(cache=True)
def gather_sequences(vol, flat, src, lo, span, out):
    """int8-range inputs q = round(256 (v - lo) / span) - 128, i.e. q/128 = normalised value."""
    for i in range(flat.size):
        f = flat[i]
        for t in range(src.size):
            v = np.int64(vol[f + src[t]]) - lo
            q = (512 * v + span) // (2 * span) - 128
            out[i, t] = min(max(q, -128), 127)


@numba.njit(cache=True, inline="always")
def _lut_index(a, s):
    return min(max((a + (1 << (s - 1))) >> s, -LUT_HALF), LUT_HALF) + LUT_HALF


@numba.njit(cache=True)
def run_sequence(seq, wx, wh, b, shift, sig, tanh_g, tanh_c, h, c, acc):
    """The LSTM step arithmetic of intlstm.cell_update over one input sequence; final state left in h, c.

    Same integers as a plain step-by-step reference (tests/int_reference.py); only the
    recurrent dot product runs on int16 data so the compiler can vectorise it.
    """
    hid = h.size
    for j in range(hid):
        h[j] = 0
        c[j] = 0
    for t in range(seq.size):
        x = np.int64(seq[t])
        for j in range(4 * hid):
            s = np.int32(0)
            for k in range(hid):
                # explicit int32 truncations (exact: |w h| <= 16129, |s| < 2**21) let LLVM use
                # 16-bit multiply-add instructions; numba would otherwise widen to int64
                s = np.int32(s + np.int32(wh[j, k] * h[k]))
            acc[j] = b[j] + wx[j] * x + s
        for j in range(hid):
            ki = _lut_index(acc[j], shift)
            kf = _lut_index(acc[hid + j], shift)
            kg = _lut_index(acc[2 * hid + j], shift)
            ko = _lut_index(acc[3 * hid + j], shift)
            cj = ((sig[kf] * c[j]) >> 7) + sig[ki] * tanh_g[kg]
            cj = min(max(cj, -C_CLAMP), C_CLAMP)
            c[j] = cj
            kc = min(max(cj >> (C_FRAC - 5), -LUT_HALF), LUT_HALF) + LUT_HALF
            h[j] = (sig[ko] * tanh_c[kc] + 64) >> 7


@numba.njit(cache=True)
def head_to_value(h, hw, hb, hshift, lo, span, vmax):
    """Linear head (normalised prediction y = out / 2**hshift) -> rounded value in [0, vmax]."""
    o = np.int64(hb)
    for k in range(h.size):
        o += hw[k] * h[k]
    one = np.int64(1) << hshift
    o = min(max(o, -2 * one), 2 * one)
    mu = lo + (((o + one) * span + one) >> (hshift + 1))  # lo + (y + 1) / 2 * span
    return min(max(mu, 0), vmax)


@numba.njit(cache=True)
def _paper_predict(vol, flat, src, lo, span, vmax, wx, wh, b, shift, sig, tanh_g, tanh_c,
                   hw, hb, hshift, mu_out):
    hid = wh.shape[1]
    seq = np.empty((1, src.size), np.int64)
    one = np.empty(1, np.int64)
    h = np.empty(hid, np.int16)
    c = np.empty(hid, np.int64)
    acc = np.empty(4 * hid, np.int64)
    for i in range(flat.size):
        one[0] = flat[i]
        gather_sequences(vol, one, src, lo, span, seq)
        run_sequence(seq[0], wx, wh, b, shift, sig, tanh_g, tanh_c, h, c, acc)
        mu_out[i] = head_to_value(h, hw, hb, hshift, lo, span, vmax)


@numba.njit(cache=True)
def _residual_buckets(res, flat, zloc, row, plane, b_out):
    """Scale bucket from neighbouring |residuals| (the ls3d rule, predictors/contexts.py)."""
    for i in range(flat.size):
        b_out[i] = activity_bucket(residual_activity(res, flat[i], zloc[i], row, plane))
