"""The encoder's fits may split their sums between threads (predictors/sums.py): the fitted
parameters, and so the streams, must be the same integers for every thread count."""
from __future__ import annotations

import numpy as np
import pytest

import medzip
from medzip.predictors.blend import BlendPredictor
from medzip.predictors.ls3d import LS3DPredictor
from medzip.predictors.models import load_model
from medzip.predictors.sums import split_sums
from medzip.training.data import mapped_volume

from conftest import demo_volume, example4d_head_series, wide_heart

VOLUMES = {"dwi_b0": demo_volume,  # noisy MR: wide sets off
           "heart": wide_heart,  # cine MR: wide class sets on
           "fmri_series": example4d_head_series}  # 4-D: previous-volume sets fitted


@pytest.fixture(scope="module", params=sorted(VOLUMES))
def vol4(request):
    return mapped_volume(VOLUMES[request.param]()).astype(np.int32)


def test_blend_parameters_do_not_depend_on_fit_threads(vol4):
    lstm = load_model("medzip-blend-lstm")
    one = BlendPredictor.fit(vol4, lstm=lstm, threads=1)
    for threads in (2, 3, 8):  # 3: an uneven split of the sampled slices
        other = BlendPredictor.fit(vol4, lstm=lstm, threads=threads)
        assert other.params() == one.params(), threads
        assert (other.wide, other.temporal) == (one.wide, one.temporal)


def test_ls3d_coefficients_do_not_depend_on_fit_threads(vol4):
    one = LS3DPredictor.fit(vol4, 1)
    for threads in (2, 5):
        assert LS3DPredictor.fit(vol4, threads).params() == one.params()


def test_streams_do_not_depend_on_worker_count_at_the_fit():
    """compress(workers=2) fits on 2 threads, workers=1 on one: the same bytes."""
    arr = demo_volume()[:6]
    assert medzip.compress(arr, workers=2) == medzip.compress(arr, workers=1)


def test_split_sums_adds_every_item_exactly_once():
    items = list(range(1, 12))

    def fn(part):
        total = np.zeros(3, np.int64)
        for i in part:
            total += np.array([i, i * i, 1 << (40 + i % 3)], np.int64)
        return total, len(part)

    want = fn(items)
    for threads in (1, 2, 3, 4, 5, 11, 20):  # 5, 11, 20: more than MAX_FIT_THREADS
        got = split_sums(fn, items, threads)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1] == len(items)
