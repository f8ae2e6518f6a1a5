"""The default predictor: a row LSTM over context-normalised features, integer-exact.

For each voxel the per-volume least-squares prediction ``mu_ls`` (ls3d coefficients, fitted by
the encoder and stored in the stream) and the residuals that prediction left on already-decoded
neighbours give a local offset and a local scale ``U``. The network sees the neighbourhood
*relative to that offset, in units of that scale* (so CT in HU, MR of any range and 8-bit data
look alike), carries an LSTM state along the scan line (from x-1 to x, which the wavefront
decodes one step earlier), and outputs a correction of the mean and the log of the residual
scale. The scale selects the entropy coder's bucket, so smooth regions cost few bits and noisy
ones more. A bias canceller adapts the mean to the volume while coding (online adaptation).
"""
from __future__ import annotations


import numba
import numpy as np

from ..entropy import N_BUCKETS
from ..errors import UnsupportedInputError
from ..intlstm import QuantLSTMParams, cell_update, exact_float32_weights, gate_sums, linear_head
from ..intmath import floor_div_clip, log2_q3
from ..scheduling import PaddedGeometry
from .base import PredictorBase, ResidualChunk
from .models import ModelFile
from .contexts import ACTIVITY_WEIGHT, residual_activity
from .bias import bias_update, new_statistics, store_corrected
from .ls3d import OFFS_2D, OFFS_3D, LS3DPredictor, flat_offsets, ls_prediction

# Feature list is append-only: a model with n inputs reads the first n. (Five more features -
# the in-slice LS prediction and previous-slice LS residuals - were tried and bought nothing.)
N_FEATURES = len(OFFS_3D) + 7 + 3
FEATURE_GAIN = 16  # feature = (value - mu_ls) * 16 / U, clipped to int8
class LSTMPredictor(PredictorBase):
    lag = 4

    def __init__(self, model: ModelFile, ls: LS3DPredictor, bias_cancel: bool | None = None):
        if model.meta["kind"] != "row-lstm":
            raise UnsupportedInputError(f"model '{model.name}' is not a row-LSTM model")
        self.model = model
        self.name = model.name
        self.ls = ls
        self.net = QuantLSTMParams(model.arrays)
        if self.net.inputs > N_FEATURES:
            raise UnsupportedInputError(f"model '{model.name}' expects {self.net.inputs} features;"
                                        f" this medzip computes {N_FEATURES}: upgrade medzip")
        self.w_t = exact_float32_weights(self.net.w)
        self.prior = model.arrays.get("coder_prior")
        self.bias_cancel = bool(model.meta.get("bias_cancel", True) if bias_cancel is None
                                else bias_cancel)

    def params(self) -> bytes:
        """The per-volume part: ls3d coefficients, then one flag byte (bit 0: bias canceller)."""
        return self.ls.params() + bytes([int(self.bias_cancel)])

    @classmethod
    def from_params(cls, model: ModelFile, blob: bytes) -> "LSTMPredictor":
        if not blob or blob[-1] > 1:
            raise ValueError("bad row-LSTM parameter block")
        return cls(model, LS3DPredictor.from_params(blob[:-1]), bias_cancel=bool(blob[-1]))

    def header_entry(self) -> dict:
        return {"name": self.model.name, "sha256": self.model.sha256}

    def start_chunk(self, geom: PaddedGeometry, vmax: int) -> "_LSTMChunk":
        return _LSTMChunk(self, geom, vmax)


class _LSTMChunk(ResidualChunk):
    def __init__(self, pred: LSTMPredictor, geom: PaddedGeometry, vmax: int):
        super().__init__(geom, vmax)
        self.p = pred
        self.net = pred.net
        self.off3 = flat_offsets(OFFS_3D, geom)
        self.off2 = flat_offsets(OFFS_2D, geom)
        self.row, self.plane, self.vmax = geom.row, geom.plane, vmax
        n_rows = geom.shape[0] * geom.shape[1]
        self.h = np.zeros((n_rows, self.net.hidden), np.int64)
        self.c = np.zeros((n_rows, self.net.hidden), np.int64)
        self.bc_sum, self.bc_cnt = new_statistics()

    def predict(self, vol, flat, zloc):
        n = flat.size
        net = self.net
        mu, bucket = self.new_step(n)
        self._mu_ls = np.empty(n, np.int64)
        u = np.empty(n, np.int64)
        xh = np.empty((n, net.inputs + net.hidden), np.float32)
        _step_inputs(vol, self.res, flat, zloc, self.off3, self.p.ls.coef3, self.off2,
                     self.p.ls.coef2, self.row, self.plane, self.vmax, self.h, xh, u, self._mu_ls)
        _step_outputs(gate_sums(xh, self.p.w_t), vol, flat, zloc, self.row, self.plane,
                      self.vmax, self.h, self.c, net.b, net.shift, net.sig, net.tanh_g,
                      net.tanh_c, net.head_w, net.head_b, net.head_shift, u, self._mu_ls,
                      self.bc_sum, self.bc_cnt, self.p.bias_cancel, mu, bucket, self._ctx,
                      self._corr)
        return mu, bucket

    def update(self, vol, flat, zloc, residual):
        # this model reads residuals of the LS prediction, not the coded ones: keep those
        self.res[flat] = vol[flat] - self._mu_ls
        if self.p.bias_cancel:
            bias_update(self._ctx, residual + self._corr, self.bc_sum, self.bc_cnt)


@numba.njit(cache=True)
def voxel_features(vol, els, f, z, mu_ls, row, plane, off3, vmax, out):
    """Context-normalised int8 features of one voxel; returns the local scale U (>= 1)."""
    e_w = els[f - 1]
    e_n = els[f - row]
    e_nw = els[f - row - 1]
    e_ne = els[f - row + 1]
    e_ww = els[f - 2]
    e_nn = els[f - 2 * row]
    e_p = els[f - plane] if z > 0 else e_ww
    act = residual_activity(els, f, z, row, plane)
    u = 1 + act // ACTIVITY_WEIGHT
    uf = float(u)  # 22 features share the divisor
    nk = off3.size
    for k in range(nk):
        if k >= 6 and z == 0:
            out[k] = 0
        else:
            out[k] = floor_div_clip((vol[f + off3[k]] - mu_ls) * FEATURE_GAIN, u, uf, 127)
    out[nk + 0] = floor_div_clip(e_w * FEATURE_GAIN, u, uf, 127)
    out[nk + 1] = floor_div_clip(e_n * FEATURE_GAIN, u, uf, 127)
    out[nk + 2] = floor_div_clip(e_nw * FEATURE_GAIN, u, uf, 127)
    out[nk + 3] = floor_div_clip(e_ne * FEATURE_GAIN, u, uf, 127)
    out[nk + 4] = floor_div_clip(e_ww * FEATURE_GAIN, u, uf, 127)
    out[nk + 5] = floor_div_clip(e_nn * FEATURE_GAIN, u, uf, 127)
    out[nk + 6] = floor_div_clip(e_p * FEATURE_GAIN, u, uf, 127) if z > 0 else 0
    out[nk + 7] = min(log2_q3(act + 1), 127)
    out[nk + 8] = 127 if z == 0 else 0
    out[nk + 9] = (mu_ls * 127) // vmax  # intensity level: background, tissue, bone...
    return u


@numba.njit(cache=True, inline="always")
def head_to_params(o_mu, o_ls, u, shift):
    """Head accumulators -> (mean offset in voxel units, 8*log2(scale))."""
    dmu = (o_mu * u + (1 << (shift - 1))) >> shift
    lq = log2_q3(u * 8) - 24 + ((o_ls * 8 + (1 << (shift - 1))) >> shift)
    return dmu, lq


@numba.njit(cache=True)
def _step_inputs(vol, els, flat, zloc, off3, c3, off2, c2, row, plane, vmax, hs, xh, u_out,
                 mu_ls_out):
    """Per voxel: LS prediction, local scale and the LSTM input row [features; h of its row]."""
    n_in = xh.shape[1] - hs.shape[1]
    feats = np.empty(N_FEATURES, np.int64)
    for i in range(flat.size):
        f = flat[i]
        z = zloc[i]
        mu_ls = min(max(ls_prediction(vol, f, z, off3, c3, off2, c2), 0), vmax)
        u_out[i] = voxel_features(vol, els, f, z, mu_ls, row, plane, off3, vmax, feats)
        mu_ls_out[i] = mu_ls
        for k in range(n_in):
            xh[i, k] = feats[k]
        h = hs[f // row]  # state of this row, left there by voxel x-1 one step earlier
        for k in range(h.size):
            xh[i, n_in + k] = h[k]


@numba.njit(cache=True)
def _step_outputs(gates, vol, flat, zloc, row, plane, vmax, hs, cs, b, shift, sig, tanh_g, tanh_c,
                  hw, hb, hshift, u, mu_ls_in, bc_sum, bc_cnt, bias_cancel, mu_out, b_out,
                  ctx_out, corr_out):
    """Per voxel: LSTM state update from its gate sums (intlstm.gate_sums: exact integers in
    float32), head, mean/bucket and the bias canceller."""
    out = np.empty(2, np.int64)
    n_gate = gates.shape[1]
    a = np.empty(n_gate, np.int64)
    for i in range(flat.size):
        f = flat[i]
        z = zloc[i]
        r = f // row
        for j in range(n_gate):
            a[j] = np.int64(gates[i, j]) + b[j]
        cell_update(a, hs[r], cs[r], shift, sig, tanh_g, tanh_c)
        linear_head(hs[r], hw, hb, out)
        dmu, lq = head_to_params(out[0], out[1], u[i], hshift)
        mu = mu_ls_in[i] + dmu
        bk = min(max((lq + 18) >> 2, 0), N_BUCKETS - 1)
        store_corrected(vol, f, z, row, plane, mu, bk, vmax, bias_cancel, bc_sum, bc_cnt, i,
                        mu_out, b_out, ctx_out, corr_out)


@numba.njit(cache=True)
def volume_features(vol, flat, zloc, off3, c3, off2, c2, row, plane, vmax, feats, els, u_out):
    """Training helper: features for given voxels of a fully known padded chunk.

    Two passes (LS residuals of every voxel first, then features), equal to what the coder
    computes incrementally, because features only read causal neighbours.
    """
    for i in range(flat.size):
        f = flat[i]
        mu_ls = min(max(ls_prediction(vol, f, zloc[i], off3, c3, off2, c2), 0), vmax)
        els[f] = vol[f] - mu_ls
    for i in range(flat.size):
        f = flat[i]
        mu_ls = vol[f] - els[f]
        u_out[i] = voxel_features(vol, els, f, zloc[i], mu_ls, row, plane, off3, vmax,
                                  feats[i])
