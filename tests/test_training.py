"""Training: the QAT cell simulates the integer kernels, and a trained model file round-trips.

Needs the 'train' extra (PyTorch); compress/decompress themselves never import it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import medzip  # noqa: E402
from medzip.container import Container  # noqa: E402
from medzip.intlstm import QuantLSTMParams, linear_head  # noqa: E402
from int_reference import lstm_cell  # noqa: E402
from medzip.training.qlstm import QRowLSTM  # noqa: E402
from medzip.training.train import split_by_subject, subject_key  # noqa: E402

from conftest import PIP_ARRAYS  # noqa: E402


def test_quantisation_aware_cell_matches_integer_kernel():
    torch.manual_seed(1)
    net = QRowLSTM(n_in=7, hidden=8)
    with torch.no_grad():
        net.head_w.normal_(0, 0.3)
        net.head_b.normal_(0, 0.1)
    net.quantized = True
    rng = np.random.default_rng(0)
    x_int = rng.integers(-127, 128, size=(5, 40, 7))
    with torch.no_grad():
        ref = net(torch.from_numpy(x_int.astype(np.float32) / 128)).numpy()
    q = QuantLSTMParams(net.export_arrays())
    got = np.zeros_like(ref)
    for b in range(x_int.shape[0]):
        h = np.zeros(q.hidden, np.int64)
        c = np.zeros(q.hidden, np.int64)
        acc = np.zeros(4 * q.hidden, np.int64)
        out = np.zeros(2, np.int64)
        for t in range(x_int.shape[1]):
            lstm_cell(x_int[b, t].astype(np.int64), h, c, q.w, q.b, q.shift, q.sig, q.tanh_g,
                      q.tanh_c, acc)
            linear_head(h, q.head_w, q.head_b, out)
            got[b, t] = out / 2.0 ** q.head_shift
    # The simulation rounds where the kernel floors in two places; outputs stay within a few
    # hidden-state quanta of each other over 40 recurrent steps.
    # (measured: max difference 0.02 on outputs up to 0.28)
    assert np.abs(got - ref).max() < 0.03
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.995


def test_subject_split_never_puts_one_subject_on_both_sides(tmp_path):
    from pathlib import Path
    paths = [Path(n) for n in ("mr_fmri_nitime_fmri1.npy", "mr_fmri_nitime_fmri2.npy",
                               "mr_pasl_prisma_0001_dicomnifti.npy", "ct_head.npy", "mr_x.npy")]
    assert subject_key(paths[0]) == subject_key(paths[1])
    train, val = split_by_subject(paths, ["mr_fmri_nitime_fmri1.npy"], 0.25)
    assert {p.name for p in val} == {"mr_fmri_nitime_fmri1.npy", "mr_fmri_nitime_fmri2.npy"}
    assert not {subject_key(p) for p in train} & {subject_key(p) for p in val}


@pytest.mark.parametrize("base", ["ls", "blend"])
def test_train_cli_exports_a_usable_model(tmp_path, base):
    """A network trained on LS residuals codes as a row-LSTM model (level 4 style); one trained
    with ``--base blend`` runs on top of medzip-blend, and the stream names it."""
    from medzip.cli import main

    vols = []
    for i, item in enumerate(PIP_ARRAYS[:3]):
        arr = item.load()
        arr = arr.reshape((-1,) + arr.shape[-2:])[:4, :48, :48]
        np.save(tmp_path / f"vol{i}_s{i}x.npy", arr)
        vols.append(str(tmp_path / f"vol{i}_s{i}x.npy"))
    model = tmp_path / "mine.npz"
    rc = main(["train", *vols, "--out", str(model), "--name", "mine", "--epochs", "1",
               "--qat-epochs", "1", "--rows-per-volume", "40", "--val", vols[0], "--base", base])
    assert rc == 0 and model.stat().st_size > 1000
    arr = np.load(vols[1])
    blob = medzip.compress(arr, model=str(model), fallback=False)  # the model codes it
    info = medzip.inspect(blob)["volumes"][0]
    if base == "ls":
        assert info["model"] == "mine"
    else:
        (vh,) = Container.parse(blob).header["volumes"]
        assert vh["model"]["name"] == "medzip-blend" and vh["model"]["lstm"]["name"] == "mine"
    np.testing.assert_array_equal(medzip.decompress(blob, model=str(model)), arr)
    with pytest.raises(medzip.MedzipError, match="mine"):
        medzip.decompress(blob)  # the stream names a model this medzip does not ship
