"""Padding and field-of-view masks: pixels at the volume's floor in every slice of every volume.

Scanners and pipelines leave regions that hold the same value through the whole volume: the
corners outside a CT's circular field of view, the outside of a brain mask in skull-stripped or
masked MR and fMRI. medzip-blend (version 2) sends such a region once, as a bit mask of the
slice plane, and the coder skips those voxels: their value is known (the floor, 0 after value
mapping), so they cost nothing and no longer crowd the adaptive tables of the low-activity
contexts. Measured on the development set: masked fslpy EPI -3.4 %, CT NEMA -1.6 %, cardiac MR
-1.4 %, nibabel fMRI -1.1 % (docs/MODELS.md).
"""
from __future__ import annotations

import numpy as np
import zstandard

# Use the mask when its coded bits are below this many bits per voxel it covers. A covered
# voxel saves more than its own coding (0.04-0.18 bits on the development set): the tables of
# the low-activity contexts and the voxels at the mask's edge gain too. Forcing every candidate
# mask on the development volumes and slices (stop 14, MODELS.md "Padding mask rule"): masks of
# 0.09-0.20 bits per covered voxel bought 0.05-0.8 % (genuine CT slices padded outside the
# field of view, thin MR with a few background pixels), up to 9.7 % on a CT slice padded below
# its air (version 5); at 0.30-6.1 (scattered zeros of single MR/CT slices) they cost up to
# 1.5 %. Until stop 14 this was 0.05, which left every single CT slice unmasked.
PAYS_BITS_PER_VOXEL = 0.25
MIN_PIXELS = 16


def packed_mask(mask: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(np.packbits(mask.ravel()).tobytes())


def _equal_in_every_slice(vol4: np.ndarray, reference) -> np.ndarray | None:
    """The (y, x) pixels equal to ``reference`` (a value or a plane) in every slice of every
    volume; None as soon as fewer than MIN_PIXELS are left."""
    mask = np.ones(vol4.shape[2:], bool)
    for t in range(vol4.shape[0]):
        for z in range(vol4.shape[1]):
            mask &= vol4[t, z] == reference
            if int(mask.sum()) < MIN_PIXELS:
                return None
    return mask


def _pays(mask: np.ndarray, vol4: np.ndarray) -> bool:
    """Whether the packed mask costs below PAYS_BITS_PER_VOXEL per voxel it covers."""
    covered = int(mask.sum()) * vol4.shape[0] * vol4.shape[1]
    return mask.sum() >= MIN_PIXELS and 8 * len(packed_mask(mask)) < PAYS_BITS_PER_VOXEL * covered


def fit_known_plane(vol4: np.ndarray) -> np.ndarray | None:
    """The (y, x) pixels that are 0 in every slice of every volume, when sending them pays."""
    mask = _equal_in_every_slice(vol4, 0)
    return mask if mask is not None and _pays(mask, vol4) else None


def fit_padding_value(vol4: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(mask, value)``: the (y, x) pixels that hold one value above the floor in every slice
    of every volume - the most common such value - when sending them pays as for
    ``fit_known_plane`` (blend version 7). CT resampled or masked with 0 HU outside a circular
    field of view while its air is clipped at -1024 HU: coded, that padding costs its own
    voxels and a 1000 HU step along the field of view's edge on every slice (head CT every 2nd
    slice padded so: +3.6 % over padding at the floor, MODELS.md "Padding above the floor")."""
    first = vol4[0, 0]
    same = _equal_in_every_slice(vol4, first)
    if same is None:
        return None
    values, counts = np.unique(first[same], return_counts=True)
    value = int(values[np.argmax(counts)])  # the lowest of the most common on a tie
    if value <= 0:  # the floor: fit_known_plane's case
        return None
    mask = same & (first == value)
    return (mask, value) if _pays(mask, vol4) else None


def fit_fov_floor(vol4: np.ndarray, mask: np.ndarray | None) -> int:
    """The lowest value outside the padding mask (inside the field of view), when the mask is
    used and that value lies above the padding's 0: CT padded with -2000 or -3024 HU outside a
    circular field of view whose air is clipped at -1024 (blend version 5). 0 otherwise."""
    if mask is None or mask.all():
        return 0
    inside = ~mask
    return int(min(int(vol4[t, z][inside].min()) for t in range(vol4.shape[0])
                   for z in range(vol4.shape[1])))
