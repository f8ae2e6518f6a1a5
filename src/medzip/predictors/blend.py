"""medzip-blend: context-classified least squares + a blend of experts by local error.

Per volume the encoder fits, with exact integer normal equations (as ls3d does):
* one global 3-D least-squares set (15 taps + bias) and one in-slice set (6 taps + bias);
* one 3-D set per *class* of a causal classification of the neighbourhood (intensity band of
  (W + N) / 2 x activity level x gradient direction x whether the previous slice agrees with
  the current one). Band edges and activity thresholds are per-volume quantiles; a class gets
  its own coefficients only where the volume has enough voxels of it to pay for them.

While coding, five experts predict every voxel (Q4 fixed point): the global 3-D LS, the
classified LS, the in-slice LS, "previous slice + in-plane gradient" and MED (the JPEG-LS
median edge detector). Each expert's absolute errors on the already-decoded neighbours (W, N,
NW, NE and the voxel above in the previous slice) give it a weight ``(best error / its error)^3``
(integer), and the prediction is the weighted mean; the JPEG-LS style bias canceller and the
residual-energy scale buckets of ls3d follow. The predictor also asks the residual coder to
*censor* the distribution at the volume's floor and ceiling (entropy.py): the mass a voxel's
distribution puts below 0 or above vmax is given to the boundary values, which is where clipped
CT (air at -1024 HU) and masked MR put many voxels.

Version 2 adds two options, each used where the encoder found that it pays: for 4-D series the
previous volume of the series as context (temporal.py: two more experts for every volume after
the first), and a padding / field-of-view mask of pixels that sit at the floor in every slice
(padding.py: those voxels are not coded at all). Version 3 adds a third, *wide* class sets: from
a chunk's third slice on, the classified LS reads 41 taps (within two rows / columns in the
slice and the previous slice, 3 x 3 in the one before) instead of 15; it pays on smooth data
(CT, cine MR, templates) and is chosen per volume on the fit sample. Streams without it are
written as version 1 or 2, byte for byte as before. Version 4 adds the long / deep class sets
and the 36-tap in-slice set, version 5 the field of view's floor, version 6 three fixed-rule
in-slice experts (GAP, W + NE - N, N + NE - NNE) on slice-poor volumes (thick slices, single
slices, noisy MR), where the previous slice often disagrees with the current one. Version 7
sends a padding mask whose pixels hold one value *above* the floor in every slice (CT zero-filled
in HU outside the field of view, air clipped at -1024): that value travels in the stream, the
masked voxels read as the floor while coding and take it back after. Version 8 writes the mask
by rows (the positions where each row changes, relative to the row above's) where that is
smaller than the bit-packed mask: a disc-shaped field of view costs ~0.2 KB instead of ~1 KB.

Everything on the coding path is integer arithmetic in numba (no fast-math).
"""
from __future__ import annotations

import struct

import numba
import numpy as np
import zstandard

from ..intlstm import gate_sums
from ..intmath import floor_div_clip
from ..scheduling import PAD, ZPAD, PaddedGeometry
from .bias import bias_update, new_statistics, store_corrected
from .ls3d import (FRAC, OFFS_2D, OFFS_3D, LS3DPredictor, fit_coefficients, fit_tap_set,
                   flat_offsets)
from .base import PredictorBase, ResidualChunk
from .contexts import activity_bucket, residual_activity
from .lstm import N_FEATURES, LSTMPredictor, _step_outputs, voxel_features
from .models import ModelFile
from .padding import (coded_mask_sizes, fit_fov_floor, fit_known_plane, fit_padding_value,
                      mask_from_rows, mask_rows)
from .sums import split_map, split_sums
from .temporal import N_T2, N_T3, fit_temporal, ref_offsets

NAME = "medzip-blend"
VERSION = 1  # written when the previous-volume context is off (3-D volumes, most DWI)
TEMPORAL_VERSION = 2  # version 1 + previous-volume experts and/or a padding mask (flags)
WIDE_VERSION = 3  # version 2's layout with the wide class sets (flag 4) on
LONG_VERSION = 4  # version 2's layout with flag 8 (long class sets) and / or 16 (in-slice set)
# version 2-4's layout with flag 64: the floor inside the padding mask's field of view (the
# lowest value outside the mask, above the padding value; CT that pads with -2000 or -3024 HU
# and clips air at -1024). Coded voxels are censored there and the masked voxels read as that
# value while coding (volume_codec.code_chunk). Streams of earlier versions are unchanged.
FLOOR_VERSION = 5
# any of the layouts of versions 2-5 (flags 0-127) and one byte more after the flags: which of
# the fixed-rule experts 7-9 take part (FIXED_EXPERTS >> 7). Written whenever one does.
FIXED_VERSION = 6
# version 6's layout (the fixed-rule byte may be 0 here) with flag 128 and the mask: the value
# the masked pixels hold, above the floor (padding.fit_padding_value). Written whenever used.
PAD_VALUE_VERSION = 7
# version 7's layout (flag 128 optional) with the mask coded by rows (padding.mask_rows)
MASK_ROWS_VERSION = 8
VERSIONS = (VERSION, TEMPORAL_VERSION, WIDE_VERSION, LONG_VERSION, FLOOR_VERSION, FIXED_VERSION,
            PAD_VALUE_VERSION, MASK_ROWS_VERSION)
# the fixed-rule experts' byte follows the flags
FIXED_BYTE_VERSIONS = (FIXED_VERSION, PAD_VALUE_VERSION, MASK_ROWS_VERSION)
FLAG_TEMPORAL, FLAG_MASK, FLAG_WIDE, FLAG_LONG, FLAG_SLICE, FLAG_DEEP = 1, 2, 4, 8, 16, 32
FLAG_FLOOR = 64
FLAG_PAD_VALUE = 128
MAX_MASK_PIXELS = 1 << 26  # a plane of up to 8192 x 8192
# the mask's two codings (version 8) compared alone when their zstd sizes differ by more than
# this many bytes, else by the whole parameter block they share a zstd frame with
MASK_CODING_MARGIN = 32
N_BANDS = 4
N_ACT = 3
N_DIR = 3
N_ZSIM = 2
N_CLASSES = N_BANDS * N_ACT * N_DIR * N_ZSIM
# Experts 0-4 work inside one volume; 5 and 6 read the previous volume of a series (version 2);
# 7-9 (version 6) are fixed in-slice rules without fitted coefficients: CALIC's
# gradient-adjusted predictor (GAP), W + NE - N and N + NE - NNE. Each is poor alone; blended
# by local error they follow edges and textures that the least-squares sets average away, most
# where the previous slice says little (thick slices): MODELS.md "Fixed-rule experts".
N_EXPERTS = 10
TEMPORAL_EXPERTS = 0b0001100000
FIXED_EXPERTS = 0b1110000000
SPATIAL_EXPERTS = 0b0000011111 | FIXED_EXPERTS
ALL_EXPERTS = 0b0001111111  # every expert of versions 1-5
DEFAULT_EXPERTS = ALL_EXPERTS | FIXED_EXPERTS
# The fixed rules read two pixels out; on slices smaller than this (a third or more of the
# pixels within two of the border) they lost (10 x 10 DWI: +0.28 %)
FIXED_MIN_SIDE = 32
# Slice-poor volumes: of the sampled voxels whose in-plane neighbourhood varies, fewer than this
# percentage have the classes' "previous slice agrees" bit. There the fixed rules are used, and
# the in-slice set with the wide sets too. Where more agree, the 3-D sets predict well and the
# fixed rules bought -0.17 ... +0.21 % (thin-slice head CT 0.73, MR templates, opendx 0.75; the
# speed target's CT, whose time they would cost), where fewer do -0.1 ... -0.6 % (the head CT
# at every 2nd / 3rd slice 0.59 / 0.55, EPI, PASL, cine MR 0.68, 2-slice CT); MODELS.md
# "Fixed-rule experts".
SLICE_AGREEMENT_PERCENT = 70
GLOBAL_LS_EXPERTS = 0b0100001  # the global 3-D LS set and its previous-volume variant
# Where the deep class sets are used they predict so much better than the 15-tap global set,
# MED, the in-slice set and the previous slice that blending those in costs bits (their local
# errors are noisy weights): the encoder keeps the class sets alone (and a series'
# previous-volume experts). Real slice-interpolated scans, single chunk, network on: -1.8 ...
# -4.2 % against the whole blend (MODELS.md "Slice interpolation"); levels 7-9 also code the
# whole blend. With the long sets the same idea (class sets + in-slice set) is mixed: -2.1 ...
# +1.9 % (k-space-filtered scans lose), so the default keeps every expert there and levels 7-9
# try LONG_EXPERTS.
LONG_EXPERTS = 0b0000110 | TEMPORAL_EXPERTS
DEEP_EXPERTS = 0b0000010 | TEMPORAL_EXPERTS
# A class's own 16 coefficients cost ~50 bytes in the stream; below this many voxels (estimated
# over the whole volume) the gain cannot pay for them and the class uses the global set.
MIN_CLASS_VOXELS = 16384
MAX_FIT_SAMPLES = 1 << 21
SAMPLE_PLANES = 48  # slices (evenly spaced) the class fits and the sets' error tests sample
# Wide class sets (version 3, FLAG_WIDE): the neighbours within two rows / columns in the slice
# and in the previous slice, and 3 x 3 in the slice before, that the wavefront has decoded: with
# lag 4 and slope 2 a voxel (dz, dy, dx) away is decoded earlier iff dx + 2 dy + 4 dz < 0.
# ls3d's 15 taps come first, in their order, so one pass over the neighbours serves every set.
OFFS_WIDE = OFFS_3D + [
    (dz, dy, dx) for dz in (0, -1, -2) for dy in range(-2, 3) for dx in range(-2, 3)
    if (dz > -2 or max(abs(dy), abs(dx)) <= 1) and dx + 2 * dy + 4 * dz < 0
    and (dz, dy, dx) not in OFFS_3D]
N_WIDE = len(OFFS_WIDE) + 1  # taps + bias
# (a class's own wide or long set costs ~3x or ~5x the bytes of a 16-coefficient one: it
# needs as many times MIN_CLASS_VOXELS, _fit_neighbourhood_classes)
# 42 x 43 / 2 products per sample (67 x 68 / 2 for the long sets): an eighth of the classes'
# sample
MAX_WIDE_SAMPLES = 1 << 18
# Used when the wide sets' absolute error on the fit sample is below this fraction of the
# 15-tap class sets' (a margin for what the sample does not show) and the bits that buys, at
# an eighth of what the error ratio alone would give (what the blend passed on of it on the dev
# volumes: 13-25 %), pay for the coefficients at ~3 bytes each (zstd packs them to 2-3).
WIDE_PAYS_NUM, WIDE_PAYS_DEN = 97, 100
# Long class sets (version 4): the wide sets' neighbourhood plus the in-slice neighbours up to
# four rows / columns away (those the wavefront has decoded). Interpolated images - MR
# reconstructed with zero-filled k-space (a scanner's "ZIP" / "interpolation" option, DWI and
# EPI resampled 2x) - are band-limited, and long filters predict them far better (MODELS.md
# "Interpolated MR": simulated 2x zero-fill of real MR, least-squares |error| 7.7 -> 3.9).
# The base they must beat is the wide sets where those pay, else the 15-tap class sets (data
# interpolated along y only: the wide sets reach two rows up, the interpolation kernel
# further). They are fitted only where a probe - the same sets fitted on LONG_PROBE_SAMPLES
# voxels - cuts the base's error on that sample below LONG_TRY_PERCENT (band-limited data;
# elsewhere they buy nothing and the fit's time is saved), and used where they pay over the
# base as the wide sets must over the 15-tap ones and cut its error below LONG_PAYS_PERCENT.
# The probe replaced a gate on the wide sets' error (below 90 % of the 15-tap sets'), which
# missed MR zero-filled in one direction only (256 x 192 acquired, 256 x 256 stored, the
# common case): MODELS.md "Interpolated MR".
OFFS_LONG = OFFS_WIDE + [
    (0, dy, dx) for dy in range(-4, 1) for dx in range(-4, 5)
    if dx + 2 * dy < 0 and max(abs(dy), abs(dx)) > 2]
N_LONG = len(OFFS_LONG) + 1
# The in-slice set (version 4, FLAG_SLICE): one set over the long sets' 36 in-slice taps, the
# blend's in-slice expert p2 on every slice and so the whole prediction on a chunk's first
# slice. It comes with the long sets. Since stop 14 the default also uses it on volumes of at
# least IN_SLICE_MIN_VOXELS whose wide sets are off, which is where a thick-slice CT lands
# (the previous slice helps little, the wide sets do not pay): head CT, every 3rd slice
# -0.93 %; on smaller volumes its 37 coefficients cost more than they buy (small MR +0.03 ...
# +0.26 %). Where the wide sets are on it bought -0.04 ... -1.5 % too, but costs a 36-tap
# product per voxel on the thin-slice CT the speed target is measured on: since stop 15 the
# default uses it with the wide sets on slice-poor volumes (SLICE_AGREEMENT_PERCENT) of at
# least a quarter of IN_SLICE_MIN_VOXELS (head CT every 2nd slice -0.44 %, cine MR -1.1 %), and
# levels 7-9 try it elsewhere (MODELS.md "Thick slices").
OFFS_LONG_SLICE = [o for o in OFFS_LONG if o[0] == 0]
IN_SLICE_MIN_VOXELS = 1 << 20
# Since stop 16 also wherever the in-slice set's absolute error, on a sample of every slice,
# is below this percentage of the 6-tap in-slice set's: smooth or band-limited slices (single
# slices of interpolated MR / CT -8.9 ... -13.4 %, MR -1.6 ... -3.1 %; volumes -0.2 ... -0.5 %);
# at 0.95-1.0 single slices gain or lose a few tenths of a percent (MODELS.md "In-slice set").
IN_SLICE_PAYS_PERCENT = 93
IN_SLICE_SAMPLES = 1 << 18
N_LONG_SLICE = len(OFFS_LONG_SLICE) + 1
LONG_PAD = 4  # chunk padding the long sets need in y and x
# Deep class sets (version 4, FLAG_DEEP): the wide sets' neighbourhood plus the 5x5 ring two
# slices back and 3x3 three and four slices back (75 taps). 3-D MR reconstructed with more
# slices than were acquired (zero-filled kz: Siemens "slice resolution" below 100 %, GE "ZIP2")
# is band-limited along z, which sets reaching two slices back barely use (MODELS.md "Slice
# interpolation"). Found by a probe as the long sets are, used by the same rule; not together
# with the long sets (one kind of wide set per stream). Chunks get DEEP_Z padding slices and
# the deep sets serve from a chunk's slice DEEP_Z on (the 15-tap class sets before it).
OFFS_DEEP = OFFS_WIDE + [(-2, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                         if max(abs(dy), abs(dx)) == 2] \
    + [(dz, dy, dx) for dz in (-3, -4) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
N_DEEP = len(OFFS_DEEP) + 1


def slices_back(offsets) -> int:
    """How many slices back the taps ``offsets`` ((dz, dy, dx), dz <= 0) reach."""
    return max(-dz for dz, _, _ in offsets)


DEEP_Z = slices_back(OFFS_DEEP)  # 4
MAX_SET_TAPS = max(len(OFFS_LONG), len(OFFS_DEEP))  # the kernels' scratch for gathered taps
LONG_TRY_PERCENT = 90
# the probe's sample: about a tenth of the long fit's time
LONG_PROBE_SAMPLES = 1 << 15
# The long (deep) sets must also cut their base's error on the fit sample below this
# percentage. It is measured on the voxels the sets were fitted to, which favours 25 more
# coefficients per class by a few percent even where they do not generalise (long over wide:
# the tiled speed CT reads 0.951, the genuine head CT 1.015); interpolated MR reads 0.43-0.73.
LONG_PAYS_PERCENT = 90
WIDE_COEF_BITS = 24
ERR_CAP = 255  # expert errors are kept as uint8 (>> err_shift)
ERR_RING = 8


class BlendPredictor(PredictorBase):
    name = NAME
    lag = 4
    censored = True  # the residual coder folds the mass outside [0, vmax] onto the boundaries

    def __init__(self, ls: LS3DPredictor, edges, athr, ccoef, bias_cancel: bool = True,
                 power: int = 3, experts: int = ALL_EXPERTS, lstm: ModelFile | None = None,
                 tcoef=None, temporal: bool = False, known: np.ndarray | None = None,
                 wcoef=None, wide: bool = False, scoef=None, in_slice: bool = False,
                 floor: int = 0, pad_value: int = 0, mask_by_rows: bool | None = None):
        self.ls = ls
        self.edges = np.asarray(edges, np.int64)  # N_BANDS - 1 intensity band edges
        self.athr = np.asarray(athr, np.int64)  # N_ACT - 1 activity thresholds
        self.ccoef = np.asarray(ccoef, np.int64).reshape(N_CLASSES, len(OFFS_3D) + 1)
        self.bias_cancel = bool(bias_cancel)
        self.power = int(power)
        self.experts = int(experts)  # bit k: expert k takes part in the blend
        # previous-volume context: the fitted (ct3, ct2) sets, and whether this stream uses them
        self.tcoef = None if tcoef is None else tuple(np.asarray(c, np.int64) for c in tcoef)
        self.temporal = bool(temporal) and self.tcoef is not None
        if self.temporal and (self.tcoef[0].size != N_T3 or self.tcoef[1].size != N_T2):
            raise ValueError("bad temporal coefficient sets")
        # pixels at the floor (0) in every slice: the engine does not code them (code_chunk)
        self.known_plane = None if known is None else np.asarray(known, bool)
        # the floor inside the mask's field of view (version 5); 0: none (the volume's floor)
        self.floor = int(floor) if self.known_plane is not None else 0
        if self.floor < 0:
            raise ValueError("bad field-of-view floor")
        # the value of the masked pixels (version 7); 0: the floor (versions 2-6)
        self.pad_value = int(pad_value) if self.known_plane is not None else 0
        if self.pad_value < 0:
            raise ValueError("bad padding value")
        # wide class sets (N_CLASSES x N_WIDE), and whether this stream uses them
        self.wcoef = None if wcoef is None else np.asarray(wcoef, np.int64)
        self.wide = bool(wide) and self.wcoef is not None
        if self.wcoef is not None and self.wcoef.shape not in (
                (N_CLASSES, N_WIDE), (N_CLASSES, N_LONG), (N_CLASSES, N_DEEP)):
            raise ValueError("bad wide coefficient sets")
        # long / deep class sets (version 4, FLAG_LONG / FLAG_DEEP): wide sets of N_LONG /
        # N_DEEP coefficients
        self.long = self.wide and self.wcoef.shape[1] == N_LONG
        self.deep = self.wide and self.wcoef.shape[1] == N_DEEP
        # the in-slice set (N_LONG_SLICE coefficients), and whether this stream uses it
        self.scoef = None if scoef is None else np.asarray(scoef, np.int64)
        self.in_slice = bool(in_slice) and self.scoef is not None
        if self.scoef is not None and self.scoef.shape != (N_LONG_SLICE,):
            raise ValueError("bad in-slice coefficient set")
        # long and in-slice sets read four pixels out: chunks get a wider zero border
        self.pad = LONG_PAD if self.long or self.in_slice else PAD
        # the taps of the class sets used from a chunk's slice ``zw`` on (all of them within
        # the chunk there): deep sets read four slices back, so chunks get as many padding
        # slices
        self.wide_offsets = OFFS_LONG if self.long else OFFS_DEEP if self.deep else OFFS_WIDE
        self.zw = slices_back(self.wide_offsets)
        self.zpad = max(ZPAD, self.zw)
        # the mask by rows (version 8): decoders pass what the stream says; None = the
        # encoder's choice, made on the first use (``mask_by_rows``): the smaller stream
        self._mask_by_rows = False if self.known_plane is None else mask_by_rows
        self._base_version = PAD_VALUE_VERSION if self.pad_value else \
            FIXED_VERSION if self.experts & FIXED_EXPERTS else \
            FLOOR_VERSION if self.floor else \
            LONG_VERSION if self.long or self.in_slice or self.deep else \
            WIDE_VERSION if self.wide else \
            TEMPORAL_VERSION if self.temporal or known is not None else VERSION
        # optional row LSTM that corrects the blend (mean and scale), as medzip-lstm corrects LS
        self.lstm = lstm
        if lstm is not None:
            self.net = LSTMPredictor(lstm, ls)  # validates the model; holds its integer weights
            self.prior = self.net.prior

    @property
    def mask_by_rows(self) -> bool:
        """Whether the stream carries the mask by rows (version 8) rather than bit-packed."""
        if self._mask_by_rows is None:
            packed, rows = coded_mask_sizes(self.known_plane)
            if rows is None or rows > packed + MASK_CODING_MARGIN:
                self._mask_by_rows = False
            elif rows + MASK_CODING_MARGIN < packed:
                self._mask_by_rows = True
            else:  # close: the mask shares its zstd frame with the coefficients
                self._mask_by_rows = len(self._params(True)) < len(self._params(False))
        return bool(self._mask_by_rows)

    @property
    def version(self) -> int:
        return MASK_ROWS_VERSION if self.mask_by_rows else self._base_version

    # -- serialisation ----------------------------------------------------------------------
    def header_entry(self) -> dict:
        entry = {"name": NAME, "version": self.version}
        if self.lstm is not None:
            entry["lstm"] = {"name": self.lstm.name, "sha256": self.lstm.sha256}
        return entry

    def variant(self, **kw) -> "BlendPredictor":
        """The same fit with other coding options (levels 7-9 try a few)."""
        opts = dict(bias_cancel=self.bias_cancel, power=self.power, experts=self.experts,
                    lstm=self.lstm, tcoef=self.tcoef, temporal=self.temporal,
                    known=self.known_plane, wcoef=self.wcoef, wide=self.wide, scoef=self.scoef,
                    in_slice=self.in_slice, floor=self.floor, pad_value=self.pad_value,
                    mask_by_rows=None)  # each variant's own smaller stream
        opts.update(kw)
        return BlendPredictor(self.ls, self.edges, self.athr, self.ccoef, **opts)

    def params(self) -> bytes:
        return self._params(self.mask_by_rows)

    def _params(self, by_rows: bool) -> bytes:
        version = MASK_ROWS_VERSION if by_rows else self._base_version
        own = np.array([not np.array_equal(c, self.ls.coef3) for c in self.ccoef], bool)
        parts = [self.edges, self.athr, self.ccoef[own].ravel()]
        if self.temporal:
            parts += list(self.tcoef)
        masks = np.packbits(own).tobytes()
        if self.wide:  # the most common set once, the classes that differ from it after
            shared = _most_common_row(self.wcoef)
            wown = np.array([not np.array_equal(c, shared) for c in self.wcoef], bool)
            parts += [shared, self.wcoef[wown].ravel()]
            masks += np.packbits(wown).tobytes()
        if self.in_slice:
            parts.append(self.scoef)
        if self.floor:
            parts.append(np.array([self.floor], np.int64))
        if self.pad_value:
            parts.append(np.array([self.pad_value], np.int64))
        if self.known_plane is not None:
            parts.append(np.array(self.known_plane.shape, np.int64))
        body = np.concatenate(parts).astype("<i8").tobytes()
        if by_rows:
            body += mask_rows(self.known_plane)
        elif self.known_plane is not None:
            body += np.packbits(self.known_plane.ravel()).tobytes()
        experts = self.experts if self.temporal else self.experts & SPATIAL_EXPERTS
        head = struct.pack("<BBBB", version, int(self.bias_cancel), self.power,
                           experts & ALL_EXPERTS)
        if version != VERSION:
            head += struct.pack("<B", FLAG_TEMPORAL * self.temporal
                                + FLAG_MASK * (self.known_plane is not None)
                                + FLAG_WIDE * self.wide + FLAG_LONG * self.long
                                + FLAG_SLICE * self.in_slice + FLAG_DEEP * self.deep
                                + FLAG_FLOOR * bool(self.floor)
                                + FLAG_PAD_VALUE * bool(self.pad_value))
        if version in FIXED_BYTE_VERSIONS:
            head += struct.pack("<B", experts >> 7)
        lsb = self.ls.params()
        packed = zstandard.ZstdCompressor(level=19).compress(masks + body)
        return head + struct.pack("<H", len(lsb)) + lsb + packed

    @classmethod
    def from_params(cls, blob: bytes, lstm: ModelFile | None = None) -> "BlendPredictor":
        version, bias, power, experts = struct.unpack_from("<BBBB", blob)
        low_extra = experts & ~ALL_EXPERTS  # bit 7 of the first experts byte: never written
        flags, pos = (struct.unpack_from("<B", blob, 4)[0], 5) if version != VERSION else (0, 4)
        if version in FIXED_BYTE_VERSIONS:  # the fixed-rule experts' byte
            experts |= struct.unpack_from("<B", blob, pos)[0] << 7
            pos += 1
        temporal, masked = bool(flags & FLAG_TEMPORAL), bool(flags & FLAG_MASK)
        wide, long, in_slice, deep = (bool(flags & FLAG_WIDE), bool(flags & FLAG_LONG),
                                      bool(flags & FLAG_SLICE), bool(flags & FLAG_DEEP))
        floored, padded = bool(flags & FLAG_FLOOR), bool(flags & FLAG_PAD_VALUE)
        # (the fixed-rule bits are checked against the version on their own)
        allowed = DEFAULT_EXPERTS if temporal else SPATIAL_EXPERTS
        if version not in VERSIONS or bias > 1 or power not in (2, 3) or low_extra \
                or not 0 < experts or experts & ~allowed \
                or (version == PAD_VALUE_VERSION and not padded) or (padded and not masked) \
                or (padded and version < PAD_VALUE_VERSION) \
                or (version == MASK_ROWS_VERSION and not masked) \
                or (version == FIXED_VERSION and not experts & FIXED_EXPERTS) \
                or (floored and version < FLOOR_VERSION) \
                or (version == FLOOR_VERSION and not floored) or (floored and not masked) \
                or (version == 2 and not 0 < flags < 4) \
                or (version == WIDE_VERSION and not 4 <= flags < 8) \
                or (version == LONG_VERSION and not (long or in_slice or deep)) \
                or ((long or deep) and not wide) or (long and deep):
            raise ValueError("bad blend parameter block")
        (n_ls,) = struct.unpack_from("<H", blob, pos)
        ls = LS3DPredictor.from_params(blob[pos + 2:pos + 2 + n_ls])
        try:
            raw = zstandard.ZstdDecompressor().decompress(
                blob[pos + 2 + n_ls:], max_output_size=(1 << 20) + MAX_MASK_PIXELS // 8)
        except zstandard.ZstdError:
            raise ValueError("bad blend parameter block") from None
        n_mask = (N_CLASSES + 7) // 8
        n_masks = n_mask * (2 if wide else 1)
        if len(raw) < n_masks:
            raise ValueError("bad blend parameter block")
        own = np.unpackbits(np.frombuffer(raw[:n_mask], np.uint8))[:N_CLASSES].astype(bool)
        wown = np.unpackbits(np.frombuffer(raw[n_mask:n_masks], np.uint8))[:N_CLASSES].astype(bool)
        k = len(OFFS_3D) + 1
        n_cls = N_BANDS - 1 + N_ACT - 1 + k * int(own.sum())
        n_t = N_T3 + N_T2 if temporal else 0
        n_set = N_LONG if long else N_DEEP if deep else N_WIDE
        n_w = n_set * (1 + int(wown.sum())) if wide else 0
        n_slice = N_LONG_SLICE if in_slice else 0
        n_body = n_cls + n_t + n_w + n_slice + int(floored) + int(padded) + (2 if masked else 0)
        if len(raw) < n_masks + 8 * n_body:
            raise ValueError("bad blend parameter block")
        body = np.frombuffer(raw, "<i8", count=n_body, offset=n_masks).astype(np.int64)
        rest = raw[n_masks + 8 * n_body:]
        known = None
        if masked:
            ny, nx = (int(v) for v in body[-2:])
            n_packed = (ny * nx + 7) // 8 if 0 < ny and 0 < nx else 0
            rows = version == MASK_ROWS_VERSION
            # row-coded masks are never longer than packed ones (the encoder keeps the smaller)
            if not (n_packed and ny * nx <= MAX_MASK_PIXELS) \
                    or (len(rest) > n_packed if rows else len(rest) != n_packed):
                raise ValueError("bad blend parameter block")
            if rows:
                known = mask_from_rows(rest, ny, nx)
            else:
                known = np.unpackbits(np.frombuffer(rest, np.uint8))[:ny * nx].astype(bool)
                known = known.reshape(ny, nx)
        elif rest:
            raise ValueError("bad blend parameter block")
        edges, athr = body[:N_BANDS - 1], body[N_BANDS - 1:N_BANDS + N_ACT - 2]
        ccoef = np.tile(ls.coef3, (N_CLASSES, 1))
        ccoef[own] = body[N_BANDS + N_ACT - 2:n_cls].reshape(-1, k)
        tcoef = (body[n_cls:n_cls + N_T3], body[n_cls + N_T3:n_cls + n_t]) if temporal else None
        wcoef = scoef = None
        w0 = n_cls + n_t
        if wide:
            wcoef = np.tile(body[w0:w0 + n_set], (N_CLASSES, 1))
            wcoef[wown] = body[w0 + n_set:w0 + n_w].reshape(-1, n_set)
        if in_slice:
            scoef = body[w0 + n_w:w0 + n_w + n_slice]
        floor = int(body[w0 + n_w + n_slice]) if floored else 0
        pad_value = int(body[w0 + n_w + n_slice + int(floored)]) if padded else 0
        if (floored and floor <= 0) or (padded and pad_value <= 0):
            raise ValueError("bad blend parameter block")
        return cls(ls, edges, athr, ccoef, bool(bias), power, experts, lstm, tcoef, temporal,
                   known, wcoef, wide, scoef, in_slice, floor, pad_value,
                   mask_by_rows=version == MASK_ROWS_VERSION)

    # -- encoder-side fit -------------------------------------------------------------------
    @classmethod
    def fit(cls, vol4: np.ndarray, ls: LS3DPredictor | None = None, threads: int = 1,
            scratch: bool = False, **kw) -> "BlendPredictor":
        """Fit to a volume (t, z, y, x); a series also gets the previous-volume sets, used when
        they pay on the fit sample (``temporal=`` forces the choice). ``threads``: split the
        fits' sums between threads (sums.py: the same parameters for any count). ``scratch``:
        ``vol4`` is the caller's throw-away copy, which the fit may overwrite."""
        kw.setdefault("known", fit_known_plane(vol4))
        if kw["known"] is None and "pad_value" not in kw:  # padding held at another value
            padding = fit_padding_value(vol4)
            if padding is not None:
                kw["known"], kw["pad_value"] = padding
        kw.setdefault("floor", fit_fov_floor(vol4, kw["known"]))  # (0 with a padding value)
        if kw["known"] is not None and (kw["floor"] or kw.get("pad_value")):
            # the sets are fitted to what the coder sees: the masked voxels read as the floor
            # (code_chunk), not a step to the padding along the field of view's edge (head CT
            # every 2nd slice padded with 0 HU: -0.6 %, with -2000 HU: -0.13 %)
            if not scratch:
                vol4 = vol4.copy()
            vol4[:, :, kw["known"]] = kw["floor"]
        ls = ls or LS3DPredictor.fit(vol4, threads)
        edges, athr, ccoef, (agree, active) = _fit_classes(vol4, ls, threads)
        fitted = fit_temporal(vol4, ls.coef3)
        if fitted is not None:
            kw.setdefault("tcoef", fitted[:2])
            kw.setdefault("temporal", fitted[2])
        fitted = _fit_wide_classes(vol4, edges, athr, ccoef, threads)
        if fitted is not None:
            kw.setdefault("wcoef", fitted[0])
            kw.setdefault("wide", fitted[1])
            if fitted[0].shape[1] == N_DEEP:
                kw.setdefault("experts", DEEP_EXPERTS)
        # the previous slice often disagrees with the current one (thick slices, noisy MR) or
        # there is none (single slices)
        slice_poor = agree * 100 < max(active, 1) * SLICE_AGREEMENT_PERCENT
        # the long sets come with the in-slice set; so do large volumes without wide sets
        # (thick slices: the slice matters most) and slice-poor ones with them
        long_sets = fitted is not None and fitted[0].shape[1] == N_LONG
        thick = vol4.size >= IN_SLICE_MIN_VOXELS // 4 and slice_poor if kw.get("wide") \
            else vol4.size >= IN_SLICE_MIN_VOXELS
        if "scoef" not in kw:  # kept where unused: levels 7-9 try it (registry._fit_blend)
            kw["scoef"] = fit_in_slice_set(vol4, threads)
        if "in_slice" not in kw:  # and wherever it predicts much better than the 6 taps
            kw["in_slice"] = long_sets or thick or _in_slice_pays(
                vol4, ls.coef2, kw["scoef"], slice_poor, threads)
        # the fixed-rule experts on slice-poor volumes, except in a series coded with its
        # previous volume (whose experts predict better; fMRI +0.3 %), with the long sets
        # (band-limited slices: blend4 golden crop +0.4 %) and on small slices
        fixed = slice_poor and not kw.get("temporal") and not long_sets \
            and min(vol4.shape[2:]) >= FIXED_MIN_SIDE
        kw.setdefault("experts", DEFAULT_EXPERTS if fixed else ALL_EXPERTS)
        return cls(ls, edges, athr, ccoef, **kw)

    def start_chunk(self, geom: PaddedGeometry, vmax: int, ref: np.ndarray | None = None):
        """``ref``: the previous volume's voxels of the same slices, padded like the chunk
        (temporal streams, volumes t >= 1); None for the first volume of a series."""
        if self.lstm is not None:
            return _BlendLSTMChunk(self, geom, vmax, ref)
        return _BlendChunk(self, geom, vmax, ref)


def fit_in_slice_set(vol4: np.ndarray, threads: int = 1) -> np.ndarray:
    """The in-slice set (FLAG_SLICE): Q12 least squares over OFFS_LONG_SLICE, on every slice."""
    return fit_tap_set(vol4, OFFS_LONG_SLICE, need_prev=False, threads=threads)


def _in_slice_pays(vol4: np.ndarray, coef2, scoef, slice_poor: bool, threads: int = 1) -> bool:
    """Whether the in-slice set's absolute error on a sample of every slice's voxels is below
    IN_SLICE_PAYS_PERCENT of the 6-tap in-slice set's and the bits that buys pay for its
    coefficients: a share of voxels * log2(error ratio), a half where the previous slice helps
    little (the in-slice experts are most of the prediction there: single slices passed on
    28-54 % of it), a sixteenth elsewhere (3-D volumes: ~5 %). Exact integer sums and an
    integer comparison: the same choice on every machine."""
    grid = _sample_grid(vol4, 0, IN_SLICE_SAMPLES, LONG_PAD, 0)
    if grid is None:
        return False
    take, _, geom, flat = grid
    off2 = flat_offsets(OFFS_2D, geom)
    offs = flat_offsets(OFFS_LONG_SLICE, geom)
    coef2, scoef = np.asarray(coef2, np.int64), np.asarray(scoef, np.int64)

    def errors(part):
        sums = [_set_errors(_padded_slices(vol4, t, z, 1, LONG_PAD), flat, off2, coef2, offs,
                            scoef) for t, z in part]
        return sum(e[0] for e in sums), sum(e[1] for e in sums)

    err2, err = (int(v) for v in split_sums(errors, take, threads))  # Python ints: no overflow
    share = 2 if slice_poor else 16
    cost = WIDE_COEF_BITS * N_LONG_SLICE
    # voxels * (err2 - err) / (err2 ln 2) / share > cost, with ln 2 as 6931 / 10000
    return err * 100 < err2 * IN_SLICE_PAYS_PERCENT \
        and vol4.size * (err2 - err) * 10000 > cost * err2 * share * 6931


@numba.njit(cache=True, nogil=True)
def _set_errors(vol, flat, off_a, coef_a, off_b, coef_b):
    """Sums of |error| (Q4) of two linear sets on sampled voxels."""
    ea = np.int64(0)
    eb = np.int64(0)
    for i in range(flat.size):
        f = flat[i]
        x16 = 16 * np.int64(vol[f])
        ea += abs(_lin_q4(vol, f, off_a, coef_a) - x16)
        eb += abs(_lin_q4(vol, f, off_b, coef_b) - x16)
    return ea, eb


def _sample_planes(vol4: np.ndarray):
    t_, z_, y_, x_ = vol4.shape
    planes = [(t, z) for t in range(t_) for z in range(1, z_)]
    take = planes[:: max(1, len(planes) // SAMPLE_PLANES)]
    step = max(1, int(np.sqrt(len(take) * y_ * x_ / MAX_FIT_SAMPLES))) if take else 1
    return take, step


def _sample_grid(vol4: np.ndarray, z_first: int, max_samples: int, pad: int, zpad: int):
    """``(take, step, geom, flat)``: up to SAMPLE_PLANES evenly spaced ``(t, z)`` slices from
    ``z_first`` on, and the flat indices, in one slice padded by ``geom`` (``pad``, ``zpad``), of
    every ``step``-th row and column, ``step`` the smallest keeping all of them at most
    ``max_samples`` voxels. None without such slices."""
    t_, z_, y_, x_ = vol4.shape
    planes = [(t, z) for t in range(t_) for z in range(z_first, z_)]
    if not planes or y_ * x_ == 0:
        return None
    take = planes[:: max(1, len(planes) // SAMPLE_PLANES)]
    step = max(1, int(np.ceil(np.sqrt(len(take) * y_ * x_ / max_samples))))
    geom = PaddedGeometry(1, y_, x_, pad=pad, zpad=zpad)
    return take, step, geom, _sample_flat(y_, x_, step, geom)


def _padded_slices(vol4, t, z, depth, pad=PAD):
    """Slices z-depth+1..z of volume t with the in-plane padding of a chunk, flattened."""
    _, _, y_, x_ = vol4.shape
    stack = np.zeros((depth, y_ + 2 * pad, x_ + 2 * pad), np.int64)
    stack[:, pad:-pad, pad:-pad] = vol4[t, z - depth + 1:z + 1]
    return stack.ravel()


def _fit_classes(vol4: np.ndarray, ls: LS3DPredictor, threads: int = 1):
    """Per-volume class thresholds, per-class Q12 LS coefficients (global set as fallback) and
    ``(agree, active)``: of the sampled voxels whose in-plane neighbourhood varies, how many
    have the class's "previous slice agrees" bit set (the same test as ``voxel_class``)."""
    k = len(OFFS_3D)
    take, step = _sample_planes(vol4)
    fallback = np.tile(ls.coef3, (N_CLASSES, 1))
    if not take:
        return np.zeros(N_BANDS - 1, np.int64), np.zeros(N_ACT - 1, np.int64), fallback, (0, 0)
    _, _, y_, x_ = vol4.shape
    geom = PaddedGeometry(1, y_, x_, zpad=1)
    off3 = flat_offsets(OFFS_3D, geom)
    # (W + N) / 2 <= vmax and the activity <= 6 vmax: int32 holds them below 2**28
    narrow = np.int32 if int(vol4.max()) < (1 << 28) else np.int64
    flat = _sample_flat(y_, x_, step, geom)

    def plane_features(plane):
        m = np.empty(flat.size, np.int64)
        a = np.empty(flat.size, np.int64)
        agree = _features(_padded_slices(vol4, *plane, 2), flat, geom.row, geom.plane, m, a)
        return m.astype(narrow), a.astype(narrow), agree  # same values, half the memory

    feats = split_map(plane_features, take, threads)
    m_all = np.concatenate([f[0] for f in feats])
    a_all = np.concatenate([f[1] for f in feats])
    agreement = (sum(f[2][0] for f in feats), sum(f[2][1] for f in feats))
    del feats
    # quantiles by exact integer sort (deterministic)
    edges = np.sort(m_all)[(np.arange(1, N_BANDS) * m_all.size) // N_BANDS].astype(np.int64)
    athr = np.sort(a_all)[(np.arange(1, N_ACT) * a_all.size) // N_ACT].astype(np.int64)
    shift = max(0, int(vol4.max()).bit_length() - 16)
    ata, atb = split_sums(lambda part: _class_sums(vol4, part, 2, flat, geom, off3, edges, athr,
                                                   shift), take, threads)
    ata = _symmetric(ata)
    # voxels of the volume each sampled voxel stands for
    scale = vol4.shape[0] * (vol4.shape[1] - 1) / len(take) * step * step
    out = fallback.copy()
    for c in range(N_CLASSES):
        if ata[c, k, k] * scale < MIN_CLASS_VOXELS or ata[c, k, k] < 4 * (k + 1):
            continue
        out[c] = fit_coefficients(ata[c], atb[c], shift)
    return edges, athr, out, agreement


def _fit_wide_classes(vol4: np.ndarray, edges, athr, ccoef, threads: int = 1):
    """``(wcoef, pays)``: per-class wide Q12 sets (a class without enough voxels gets the set
    fitted on all of them) and whether they beat the 15-tap class sets on the fit sample; where
    a probe says the data is band-limited in the slice (long sets) or along z (deep sets), those
    instead if they pay over the sets that are used without them (wide where those pay, else
    15-tap) and cut their error below LONG_PAYS_PERCENT; of both, the one with the lower error
    ratio (version 4). None where no voxel has two slices above it. Exact integer sums: the
    same on every machine."""
    wide = _fit_neighbourhood_classes(vol4, edges, athr, OFFS_3D, ccoef, OFFS_WIDE, PAD, threads)
    if wide is None:
        return None
    wcoef, pays, _, _ = wide
    base_offs, base_coef = (OFFS_WIDE, wcoef) if pays else (OFFS_3D, ccoef)
    best, best_ratio = (wcoef, pays), None
    for offs, pad in ((OFFS_LONG, LONG_PAD), (OFFS_DEEP, PAD)):
        probe = _fit_neighbourhood_classes(vol4, edges, athr, base_offs, base_coef, offs, pad,
                                           threads, LONG_PROBE_SAMPLES)
        if probe is None or probe[3] * 100 >= probe[2] * LONG_TRY_PERCENT:
            continue
        fitted = _fit_neighbourhood_classes(vol4, edges, athr, base_offs, base_coef, offs, pad,
                                            threads)
        if fitted is None or not fitted[1] \
                or fitted[3] * 100 >= fitted[2] * LONG_PAYS_PERCENT:
            continue
        # error ratios compared in integers: err / err_base < best's
        if best_ratio is None or fitted[3] * best_ratio[1] < best_ratio[0] * fitted[2]:
            best, best_ratio = (fitted[0], True), (fitted[3], fitted[2])
    return best


def _fit_neighbourhood_classes(vol4, edges, athr, offs_base, base_coef, offs, pad, threads,
                               max_samples=MAX_WIDE_SAMPLES):
    """``(coef, pays, err_base, err)``: per-class Q12 sets over the taps ``offs`` (fitted on a
    sample of at most ``max_samples`` voxels with as many slices above them as the taps reach,
    at least two) and whether they pay over the sets ``base_coef`` (taps ``offs_base``):
    absolute error below WIDE_PAYS of theirs on the same sample, and the bits that buys above
    the extra coefficients' cost. None without such voxels."""
    zr = max(2, slices_back(offs))  # slices above: 2, or DEEP_Z for the deep sets
    grid = _sample_grid(vol4, zr, max_samples, pad, zr)
    if grid is None:
        return None
    take, step, geom, flat = grid
    n_set = len(offs) + 1
    offw = flat_offsets(offs, geom)
    k = len(offs)
    shift = max(0, int(vol4.max()).bit_length() - 16)
    ata, atb = split_sums(lambda part: _class_sums(vol4, part, zr + 1, flat, geom, offw, edges,
                                                   athr, shift, pad), take, threads)
    ata = _symmetric(ata)
    if ata[:, k, k].sum() < 4 * (k + 1):
        return None
    scale = vol4.shape[0] * (vol4.shape[1] - zr) / len(take) * step * step
    shared = fit_coefficients(ata.sum(axis=0), atb.sum(axis=0), shift)
    coef = np.tile(shared, (N_CLASSES, 1))
    min_voxels = MIN_CLASS_VOXELS * n_set // (len(OFFS_3D) + 1)  # ~3 bytes a coefficient
    for c in range(N_CLASSES):
        if ata[c, k, k] * scale >= min_voxels and ata[c, k, k] >= 4 * (k + 1):
            coef[c] = fit_coefficients(ata[c], atb[c], shift)
    offb = flat_offsets(offs_base, geom)

    def errors(part):
        sums = [_class_errors(_padded_slices(vol4, t, z, zr + 1, pad), flat, geom.row,
                              geom.plane, edges, athr, offb, base_coef, offw, coef)
                for t, z in part]
        return sum(e[0] for e in sums), sum(e[1] for e in sums)

    err_base, err = split_sums(errors, take, threads)

    def coefficient_bits(sets, n):
        shared = _most_common_row(sets)
        own = sum(not np.array_equal(c, shared) for c in sets)
        return WIDE_COEF_BITS * n * (1 + own)

    cost = coefficient_bits(coef, n_set)
    if base_coef.shape[1] > len(OFFS_3D) + 1:  # over the wide sets: the extra coefficients
        cost -= coefficient_bits(base_coef, base_coef.shape[1])
    voxels = vol4.shape[0] * (vol4.shape[1] - zr) * vol4.shape[2] * vol4.shape[3]
    # bits bought ~ voxels * log2(err_base / err) / 8 ~ voxels * (err_base - err) / (err_base
    # ln 2) / 8, compared in integers (ln 2 as 693.1 / 1000): the same choice on every machine
    pays = err * WIDE_PAYS_DEN < err_base * WIDE_PAYS_NUM \
        and voxels * (err_base - err) * 10000 > cost * err_base * 8 * 6931
    return coef, pays, err_base, err


@numba.njit(cache=True, nogil=True)
def _class_errors(vol, flat, row, plane, edges, athr, off3, ccoef, offw, wcoef):
    """Sum of |error| (Q4) of two class sets (15-tap and wide, or wide and long) on sampled
    voxels."""
    e3 = np.int64(0)
    ew = np.int64(0)
    for i in range(flat.size):
        f = flat[i]
        c = voxel_class(vol, f, row, plane, edges, athr)
        x16 = 16 * vol[f]
        e3 += abs(_lin_q4(vol, f, off3, ccoef[c]) - x16)
        ew += abs(_lin_q4(vol, f, offw, wcoef[c]) - x16)
    return e3, ew


def _class_sums(vol4, part, depth, flat, geom, offs, edges, athr, shift, pad=PAD):
    """Per-class normal equations (upper triangles) of the sampled voxels of the planes in
    ``part``, with ``depth`` slices of context."""
    k = offs.size
    ata = np.zeros((N_CLASSES, k + 1, k + 1), np.int64)
    atb = np.zeros((N_CLASSES, k + 1), np.int64)
    for t, z in part:
        _accumulate(_padded_slices(vol4, t, z, depth, pad), flat, geom.row, geom.plane, offs,
                    edges, athr, shift, ata, atb)
    return ata, atb


def _most_common_row(rows: np.ndarray) -> np.ndarray:
    """The row that occurs most often (the first of those on a tie)."""
    uniq, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    best = max(range(len(uniq)), key=lambda i: (counts[i], -first[i]))
    return uniq[best]


def _sample_flat(y_, x_, step, geom):
    yy, xx = np.mgrid[0:y_:step, 0:x_:step]
    return ((geom.zpad * geom.shape[1] + yy.ravel() + geom.pad) * geom.row
            + xx.ravel() + geom.pad).astype(np.int64)


@numba.njit(cache=True, inline="always")
def _raw_features(vol, f, row):
    """(W + N) / 2, in-plane horizontal and vertical variation (causal values only)."""
    w = np.int64(vol[f - 1])
    n = np.int64(vol[f - row])
    nw = np.int64(vol[f - row - 1])
    ne = np.int64(vol[f - row + 1])
    dh = abs(w - vol[f - 2]) + abs(n - nw) + abs(ne - n)
    dv = abs(w - nw) + abs(n - vol[f - 2 * row]) + abs(ne - vol[f - 2 * row + 1])
    return (w + n + 1) >> 1, dh, dv


@numba.njit(cache=True, nogil=True)
def _features(vol, flat, row, plane, m_out, a_out):
    """(W + N) / 2 and the in-plane activity of each sampled voxel; returns ``(agree,
    active)``: voxels with activity > 0, and of those the ones whose W and N changed from the
    previous slice by at most half their activity (``voxel_class``'s z-agreement bit)."""
    agree = 0
    active = 0
    for i in range(flat.size):
        f = flat[i]
        m, dh, dv = _raw_features(vol, f, row)
        m_out[i] = m
        a_out[i] = dh + dv
        if dh + dv > 0:
            active += 1
            if _previous_slice_agrees(vol, f, row, plane, dh + dv):
                agree += 1
    return agree, active


@numba.njit(cache=True, inline="always")
def voxel_class(vol, f, row, plane, edges, athr):
    """Class of a voxel with a previous slice: band x activity x direction x z agreement."""
    m, dh, dv = _raw_features(vol, f, row)
    return class_of_features(vol, f, row, plane, m, dh, dv, edges, athr)


@numba.njit(cache=True, inline="always")
def _previous_slice_agrees(vol, f, row, plane, act):
    """Whether W and N changed from the previous slice by at most half the in-plane activity
    ``act``: the classes' z-agreement bit, and what the fit counts to find slice-poor volumes."""
    dz = abs(np.int64(vol[f - 1]) - vol[f - plane - 1]) \
        + abs(np.int64(vol[f - row]) - vol[f - plane - row])
    return 2 * dz <= act


@numba.njit(cache=True, inline="always")
def class_of_features(vol, f, row, plane, m, dh, dv, edges, athr):
    """voxel_class from the voxel's ``_raw_features`` (blend_base computes them once for the
    class and the GAP expert)."""
    band = 0
    for e in range(edges.size):
        if m >= edges[e]:
            band = e + 1
    act = dh + dv
    lvl = 0
    for e in range(athr.size):
        if act > athr[e]:
            lvl = e + 1
    d = 2
    if 2 * dh < dv:
        d = 0
    elif 2 * dv < dh:
        d = 1
    zs = 1 if _previous_slice_agrees(vol, f, row, plane, act) else 0
    return ((band * N_ACT + lvl) * N_DIR + d) * N_ZSIM + zs


# samples per float64 accumulation run in _accumulate: 2**20 products below 2**32 sum below 2**52
ACC_FLUSH = 1 << 20


@numba.njit(cache=True, nogil=True)
def _accumulate(vol, flat, row, plane, off3, edges, athr, shift, ata, atb):
    """Add the sampled voxels' per-class normal equations (upper triangle) to ``ata``/``atb``.

    The values ``vol >> shift`` are integers in [0, 2**16), so every product is an integer
    below 2**32 and ACC_FLUSH of them sum below 2**52: float64 holds every partial sum exactly,
    whatever the order (and the products vectorise, which int64 multiplies do not on AVX2).
    The float sums are moved into the int64 totals every ACC_FLUSH samples."""
    k = off3.size
    n_cls = ata.shape[0]
    a = np.empty(k + 1, np.float64)
    acc = np.zeros((n_cls, k + 1, k + 1), np.float64)
    acc_b = np.zeros((n_cls, k + 1), np.float64)
    for start in range(0, flat.size, ACC_FLUSH):
        for i in range(start, min(start + ACC_FLUSH, flat.size)):
            f = flat[i]
            c = voxel_class(vol, f, row, plane, edges, athr)
            for j in range(k):
                a[j] = vol[f + off3[j]] >> shift
            a[k] = 1.0
            target = float(vol[f] >> shift)
            for p in range(k + 1):
                ap = a[p]
                acc_b[c, p] += ap * target
                for q in range(p, k + 1):  # the upper triangle: _symmetric fills the rest
                    acc[c, p, q] += ap * a[q]
        for c in range(n_cls):
            for p in range(k + 1):
                atb[c, p] += np.int64(acc_b[c, p])
                acc_b[c, p] = 0.0
                for q in range(p, k + 1):
                    ata[c, p, q] += np.int64(acc[c, p, q])
                    acc[c, p, q] = 0.0


def _symmetric(ata: np.ndarray) -> np.ndarray:
    """Per-class normal matrices from _accumulate's upper triangles."""
    upper = np.triu(np.ones(ata.shape[1:], bool))
    return np.where(upper, ata, ata.transpose(0, 2, 1))


class _BlendChunk(ResidualChunk):
    def __init__(self, pred: BlendPredictor, geom: PaddedGeometry, vmax: int,
                 ref: np.ndarray | None = None):
        super().__init__(geom, vmax)
        self.p = pred
        self.off3 = flat_offsets(OFFS_3D, geom)
        self.off2 = flat_offsets(OFFS_2D, geom)
        self.offt = ref_offsets(geom.row)
        self.offw = flat_offsets(pred.wide_offsets, geom)
        self.zw = pred.zw  # first slice of a chunk the wide (long, deep) sets serve
        # the in-slice set (version 4, FLAG_SLICE); one element: none
        self.offs = flat_offsets(OFFS_LONG_SLICE, geom) if pred.in_slice \
            else np.zeros(1, np.int64)
        self.scoef = pred.scoef if pred.in_slice else np.zeros(1, np.int64)
        self.wcoef = pred.wcoef if pred.wide else np.zeros((1, 1), np.int64)
        if pred.temporal and ref is not None:
            self.ref, self.ct3, self.ct2 = ref, pred.tcoef[0], pred.tcoef[1]
            self.experts = pred.experts
        else:  # no previous volume: the in-volume experts only (never an empty blend)
            self.ref = np.zeros(1, self.res.dtype)
            self.ct3 = np.zeros(N_T3, np.int64)
            self.ct2 = np.zeros(N_T2, np.int64)
            self.experts = pred.experts & SPATIAL_EXPERTS or 1
        self.row, self.plane, self.vmax = geom.row, geom.plane, vmax
        if geom.pad != pred.pad or geom.zpad != pred.zpad:
            raise ValueError("medzip-blend needs the padding of its version")
        # per voxel, per expert: |error| >> err_shift, in a ring of ERR_RING columns per row
        self.err = np.zeros(geom.shape[0] * geom.shape[1] * ERR_RING * N_EXPERTS, np.uint8)
        self.err_shift = max(0, int(vmax).bit_length() - 12)
        self.bc_sum, self.bc_cnt = new_statistics()

    def predict(self, vol, flat, zloc):
        n = flat.size
        mu, bucket = self.new_step(n)
        self._pred = np.empty((n, N_EXPERTS), np.int64)
        p = self.p
        _blend_predict(vol, self.ref, self.res, self.err, flat, zloc, self.off3, p.ls.coef3,
                       self.off2, p.ls.coef2, p.ccoef, p.edges, p.athr, self.offt, self.ct3,
                       self.ct2, self.row, self.plane, self.vmax, p.power, self.experts,
                       self.offw, self.wcoef, self.offs, self.scoef, self.zw, p.bias_cancel,
                       self.bc_sum,
                       self.bc_cnt, mu, bucket,
                       self._ctx, self._corr, self._pred)
        return mu, bucket

    def update(self, vol, flat, zloc, residual):
        self.res[flat] = residual
        self.advance_experts(vol, flat)
        if self.p.bias_cancel:
            bias_update(self._ctx, residual + self._corr, self.bc_sum, self.bc_cnt)

    def network_inputs(self, vol, flat, zloc, hs, xh) -> tuple[np.ndarray, np.ndarray]:
        """The blend as a network's base: ``(u, base)`` per voxel and the network's input rows
        in ``xh`` (features, then the row states ``hs``), as ``lstm._step_inputs`` for LS.
        ``res`` must hold ``x - base`` of decoded voxels (the caller keeps it so)."""
        n = flat.size
        p = self.p
        u = np.empty(n, np.int64)
        base = np.empty(n, np.int64)
        self._pred = np.empty((n, N_EXPERTS), np.int64)
        _blend_lstm_inputs(vol, self.ref, self.res, self.err, flat, zloc, self.off3, p.ls.coef3,
                           self.off2, p.ls.coef2, p.ccoef, p.edges, p.athr, self.offt, self.ct3,
                           self.ct2, self.row, self.plane, self.vmax, p.power, self.experts,
                           self.offw, self.wcoef, self.offs, self.scoef, self.zw, hs, xh, u,
                           base,
                           self._pred)
        return u, base

    def advance_experts(self, vol, flat) -> None:
        """After a step: each expert's error on the voxels just decoded, for the weights."""
        _blend_update(vol, flat, self._pred, self.err, self.err_shift, self.row, self.experts)


class _BlendLSTMChunk(_BlendChunk):
    """The blend as base prediction; the row LSTM adds its mean correction and scale."""

    def __init__(self, pred: BlendPredictor, geom: PaddedGeometry, vmax: int,
                 ref: np.ndarray | None = None):
        super().__init__(pred, geom, vmax, ref)
        net = pred.net.net
        n_rows = geom.shape[0] * geom.shape[1]
        self.h = np.zeros((n_rows, net.hidden), np.int64)
        self.c = np.zeros((n_rows, net.hidden), np.int64)

    def predict(self, vol, flat, zloc):
        n = flat.size
        p, lp = self.p, self.p.net
        net = lp.net
        mu, bucket = self.new_step(n)
        xh = np.empty((n, net.inputs + net.hidden), np.float32)
        u, self._base = self.network_inputs(vol, flat, zloc, self.h, xh)
        _step_outputs(gate_sums(xh, lp.w_t), vol, flat, zloc, self.row, self.plane, self.vmax,
                      self.h, self.c, net.b, net.shift, net.sig, net.tanh_g, net.tanh_c,
                      net.head_w, net.head_b, net.head_shift, u, self._base, self.bc_sum,
                      self.bc_cnt, p.bias_cancel, mu, bucket, self._ctx, self._corr)
        return mu, bucket

    def update(self, vol, flat, zloc, residual):
        # the network reads residuals of the base prediction: keep those
        self.res[flat] = vol[flat] - self._base
        self.advance_experts(vol, flat)
        if self.p.bias_cancel:
            bias_update(self._ctx, residual + self._corr, self.bc_sum, self.bc_cnt)


@numba.njit(cache=True, inline="always")
def _slot(f, row):
    """Error memory of voxel f: its row (all slices, all rows) and column modulo ERR_RING.

    With lag 4 and slope 2 every reader of a voxel's errors (W, WW, N, NW, NE, NN of the same
    slice, the voxel below in the next slice) is coded within 4 steps, before the voxel ERR_RING
    columns to the right (8 steps later) reuses the slot; columns left of the first one are read
    before anything is written there, and the one right of the last is skipped explicitly."""
    return _slot_rc(f // row, f % row)


@numba.njit(cache=True, inline="always")
def _slot_rc(r, c):
    """_slot of the voxel at flat row r (all slices, all rows), column c."""
    return (r * ERR_RING + c % ERR_RING) * N_EXPERTS


@numba.njit(cache=True, inline="always")
def _lin_q4(vol, f, off, c):
    acc = c[c.size - 1]
    for k in range(off.size):
        acc += c[k] * vol[f + off[k]]
    return _q4(acc)


@numba.njit(cache=True, inline="always")
def _q4(acc):
    """A Q12 linear prediction rounded to Q4."""
    return (acc + (1 << (FRAC - 5))) >> (FRAC - 4)


@numba.njit(cache=True, inline="always")
def _lin_q4_temporal(vol, ref, f, off, offt, c):
    """Q4 prediction from spatial taps ``off`` and the previous volume's taps ``offt``."""
    acc = c[c.size - 1]
    for k in range(off.size):
        acc += c[k] * vol[f + off[k]]
    for k in range(offt.size):
        acc += c[off.size + k] * ref[f + offt[k]]
    return _q4(acc)


@numba.njit(cache=True, inline="always")
def _med(w, n, nw):
    if nw >= max(w, n):
        return min(w, n)
    if nw <= min(w, n):
        return max(w, n)
    return w + n - nw


@numba.njit(cache=True, inline="always")
def _gap(w, n, nw, ne, dh, dv):
    """CALIC's gradient-adjusted prediction (Wu & Memon 1997), Q4: the horizontal and vertical
    gradient estimates (``_raw_features``' dh, dv: CALIC's) pick W, N or a blend of
    (W + N) / 2 + (NE - NW) / 4 and one of them, with CALIC's thresholds (80, 32, 8) on the
    coded (value-mapped) integers; thresholds scaled with the bit depth measured no better on
    12-bit CT and MR."""
    d = dv - dh
    base = 8 * (w + n) + 4 * (ne - nw)
    if d > 80:
        return 16 * w
    if d < -80:
        return 16 * n
    if d > 32:
        return (base + 16 * w) // 2
    if d > 8:
        return (3 * base + 16 * w) // 4
    if d < -32:
        return (base + 16 * n) // 2
    if d < -8:
        return (3 * base + 16 * n) // 4
    return base


@numba.njit(cache=True, inline="always")
def blend_base(vol, ref, err, f, z, off3, c3, off2, c2, ccoef, edges, athr, offt, ct3, ct2, row,
               plane, vmax, power, experts, offw, wcoef, offs, sc, zw, pred, e, taps):
    """The experts' Q4 predictions (into ``pred``) and their error-weighted mean, in [0, vmax].
    ``e`` and ``taps`` (int64, N_EXPERTS and MAX_SET_TAPS long) are scratch space.

    ``ref`` (the previous volume, padded like ``vol``) is read only when ``experts`` has the
    temporal bits set; ``wcoef`` (wide class sets) only when it has more than one column;
    ``sc`` (the in-slice set of long streams, taps ``offs``) only when it has more than one
    element: it replaces the 6-tap in-slice set ``c2``. The wide sets serve from slice ``zw`` of
    the chunk on (2; the deep sets 4), the 15-tap class sets ``ccoef`` before."""
    ne = N_EXPERTS
    w = np.int64(vol[f - 1])
    n = np.int64(vol[f - row])
    nw = np.int64(vol[f - row - 1])
    med = 16 * _med(w, n, nw)
    fixed = experts & FIXED_EXPERTS
    if z > 0 or fixed:  # the class's features, which GAP reads too
        m, dh, dv = _raw_features(vol, f, row)
    else:
        m = dh = dv = np.int64(0)
    if z > 0:
        cls = class_of_features(vol, f, row, plane, m, dh, dv, edges, athr)
        # the in-slice, global and class sets read one gathering of the neighbours: off2 is
        # the start of off3, off3 the start of offw (integer sums: the order does not matter).
        # Gathered first, then plain dot products: 5-10 % less time in this kernel than one
        # loop reading each neighbour into three sums.
        if z >= zw and wcoef.shape[1] > 1:
            cc, offc = wcoef[cls], offw
        else:
            cc, offc = ccoef[cls], off3
        nt = offc.size
        for k in range(nt):
            taps[k] = vol[f + offc[k]]
        a0 = c3[c3.size - 1]
        for k in range(off3.size):
            a0 += c3[k] * taps[k]
        a1 = cc[nt]
        for k in range(nt):
            a1 += cc[k] * taps[k]
        p0, p1 = _q4(a0), _q4(a1)
        if sc.size > 1:
            p2 = _lin_q4(vol, f, offs, sc)
        else:
            a2 = c2[c2.size - 1]
            for k in range(off2.size):
                a2 += c2[k] * taps[k]
            p2 = _q4(a2)
        pv = np.int64(vol[f - plane])
        p3 = 16 * pv + 8 * ((w - vol[f - plane - 1]) + (n - vol[f - plane - row]))
    else:
        p2 = _lin_q4(vol, f, offs, sc) if sc.size > 1 else _lin_q4(vol, f, off2, c2)
        p0 = p2
        p1 = p2
        p3 = med
    pred[0] = p0
    pred[1] = p1
    pred[2] = p2
    pred[3] = p3
    pred[4] = med
    if experts & TEMPORAL_EXPERTS:
        if z > 0:
            pred[5] = _lin_q4_temporal(vol, ref, f, off3, offt, ct3)
        else:
            pred[5] = _lin_q4_temporal(vol, ref, f, off2, offt, ct2)
        pr = np.int64(ref[f])
        pred[6] = 16 * pr + 8 * ((w - ref[f - 1]) + (n - ref[f - row]))
    else:  # never blended; kept defined for the error memory
        pred[5] = p0
        pred[6] = p0
    if fixed:
        ne_ = np.int64(vol[f - row + 1])
        pred[7] = _gap(w, n, nw, ne_, dh, dv)
        pred[8] = 16 * (w + ne_ - n)
        pred[9] = 16 * (n + ne_ - np.int64(vol[f - 2 * row + 1]))
    else:
        pred[7] = p0
        pred[8] = p0
        pred[9] = p0
    # each expert's absolute errors on the decoded neighbours (NE of the last column is padding)
    # slots of W, N, NW, NE, the voxel below, WW and NN from one division (f is at least PAD
    # from the row's ends, so these neighbours are in the same or the rows above)
    r_f = f // row
    c_f = f - r_f * row
    ne_inside = c_f + 1 < row - PAD
    s_w = _slot_rc(r_f, c_f - 1)
    s_n = _slot_rc(r_f - 1, c_f)
    s_nw = _slot_rc(r_f - 1, c_f - 1)
    s_ne = _slot_rc(r_f - 1, c_f + 1)
    s_p = _slot_rc(r_f - plane // row, c_f)
    s_ww = _slot_rc(r_f, c_f - 2)
    s_nn = _slot_rc(r_f - 2, c_f)
    emin = np.int64(1) << 40
    for k in range(ne):
        if not (experts >> k) & 1:
            e[k] = np.int64(1) << 40
            continue
        s = 2 * np.int64(err[s_w + k]) + 2 * np.int64(err[s_n + k]) + np.int64(err[s_nw + k])
        if ne_inside:
            s += np.int64(err[s_ne + k])
        if z == 0:
            s += np.int64(err[s_ww + k]) + np.int64(err[s_nn + k])
        elif fixed:  # version 6's window: the slice's own errors count more (MODELS.md)
            s += np.int64(err[s_ww + k]) + np.int64(err[s_nn + k]) + np.int64(err[s_p + k])
        else:
            s += 2 * np.int64(err[s_p + k])
        e[k] = 2 + s
        emin = min(emin, e[k])
    num = np.int64(0)
    den = np.int64(0)
    for k in range(ne):
        if not (experts >> k) & 1:
            continue
        r = floor_div_clip(emin << 10, e[k], float(e[k]), 1024)  # (emin << 10) // e[k]
        wk = r * r if power == 2 else (r * r * r) >> 10  # <= 2**20
        num += wk * pred[k]
        den += wk
    mu = ((num + (den >> 1)) // den + 8) >> 4
    return min(max(mu, 0), vmax)


@numba.njit(cache=True)
def _blend_predict(vol, ref, res, err, flat, zloc, off3, c3, off2, c2, ccoef, edges, athr, offt,
                   ct3, ct2, row, plane, vmax, power, experts, offw, wcoef, offs, sc, zw,
                   bias_cancel,
                   bc_sum, bc_cnt, mu_out, b_out, ctx_out, corr_out, pred_out):
    e = np.empty(N_EXPERTS, np.int64)
    taps = np.empty(MAX_SET_TAPS, np.int64)
    for i in range(flat.size):
        f = flat[i]
        z = zloc[i]
        mu = blend_base(vol, ref, err, f, z, off3, c3, off2, c2, ccoef, edges, athr, offt, ct3,
                        ct2, row, plane, vmax, power, experts, offw, wcoef, offs, sc, zw,
                        pred_out[i], e, taps)
        b = activity_bucket(residual_activity(res, f, z, row, plane))
        store_corrected(vol, f, z, row, plane, mu, b, vmax, bias_cancel, bc_sum, bc_cnt, i,
                        mu_out, b_out, ctx_out, corr_out)


@numba.njit(cache=True)
def _blend_lstm_inputs(vol, ref, els, err, flat, zloc, off3, c3, off2, c2, ccoef, edges, athr,
                       offt, ct3, ct2, row, plane, vmax, power, experts, offw, wcoef, offs, sc, zw,
                       hs, xh, u_out, base_out, pred_out):
    """As lstm._step_inputs, with the blend as the base prediction the network corrects."""
    n_in = xh.shape[1] - hs.shape[1]
    feats = np.empty(N_FEATURES, np.int64)
    e = np.empty(N_EXPERTS, np.int64)
    taps = np.empty(MAX_SET_TAPS, np.int64)
    for i in range(flat.size):
        f = flat[i]
        z = zloc[i]
        base = blend_base(vol, ref, err, f, z, off3, c3, off2, c2, ccoef, edges, athr, offt, ct3,
                          ct2, row, plane, vmax, power, experts, offw, wcoef, offs, sc, zw,
                          pred_out[i], e, taps)
        u_out[i] = voxel_features(vol, els, f, z, base, row, plane, off3, vmax, feats)
        base_out[i] = base
        for k in range(n_in):
            xh[i, k] = feats[k]
        h = hs[f // row]
        for k in range(h.size):
            xh[i, n_in + k] = h[k]


@numba.njit(cache=True)
def _blend_update(vol, flat, pred, err, shift, row, experts):
    ne = N_EXPERTS
    for i in range(flat.size):
        f = flat[i]
        x16 = 16 * np.int64(vol[f])
        for k in range(ne):
            if not (experts >> k) & 1:  # never read
                continue
            d = (abs(x16 - pred[i, k]) + 8) >> 4
            err[_slot(f, row) + k] = min(d >> shift, ERR_CAP)
