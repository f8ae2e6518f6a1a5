"""Hostile archives: a ``.mzp`` from someone else may cost only a bounded amount of memory and
time, and may raise nothing but a MedzipError (or decode to exactly the original).

Every case runs in a forked child under an address-space limit (``RLIMIT_AS``), so an
allocation made from an unchecked header number fails the test instead of the machine; the
child reports the outcome and how far its resident memory grew.
"""
from __future__ import annotations

import multiprocessing
import random
import resource
import struct
import time
import zlib

import numpy as np
import pytest

import medzip
from medzip.errors import CorruptStreamError, MedzipError

from conftest import Stream, deep_trio, recrc_header, wide_heart
from test_determinism import sample_array

HEADROOM = 768 << 20  # address space a child may add to what it inherited
RSS_BUDGET = 256 << 20  # resident memory a hostile archive may cost on top of the start


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) << 10
    raise KeyError(key)


def _child(conn, fn, args):
    start_rss = _status("VmRSS")
    limit = _status("VmSize") + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which judges it
        result = ("raised", f"{type(exc).__name__}: {exc}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    conn.send((*result, max(0, peak - start_rss)))
    conn.close()


def run_limited(fn, *args, timeout: float = 300):
    """``(status, value, rss_growth)`` of ``fn(*args)`` run in a memory-limited forked child."""
    parent, child = multiprocessing.get_context("fork").Pipe(duplex=False)
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            pytest.fail(f"child did not finish within {timeout} s")
        return parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _outcome(data: bytes, original: np.ndarray) -> str:
    """What decoding and inspecting ``data`` did: 'exact', 'corrupt', 'refused' or a leak."""
    try:
        medzip.inspect(data)
    except MedzipError:
        pass
    except Exception as exc:  # noqa: BLE001
        return f"LEAK inspect {type(exc).__name__}: {exc}"[:300]
    try:
        out = medzip.decompress(data)
    except CorruptStreamError as exc:
        return "corrupt" if "\n" not in str(exc) else "LEAK multi-line message"
    except MedzipError as exc:
        return "refused" if "\n" not in str(exc) else "LEAK multi-line message"
    except Exception as exc:  # noqa: BLE001
        return f"LEAK decompress {type(exc).__name__}: {exc}"[:300]
    if out.dtype == original.dtype and out.shape == original.shape \
            and np.array_equal(out, original):
        return "exact"
    return "WRONG array decoded without an error"


@pytest.fixture(scope="module")
def real():
    arr = sample_array()[:4, :40, :40]
    return arr, medzip.compress(arr, level=1, chunk_slices=2)


@pytest.fixture(scope="module")
def sparse():
    arr = (sample_array()[:4, :40, :40] // 7 * 7).astype(np.uint16)  # a value table
    data = medzip.compress(arr, level=1, chunk_slices=2)
    assert "value_table" in Stream.parse(data).header["volumes"][0]
    return arr, data


def _edit(data: bytes, fn) -> bytes:
    s = Stream.parse(data)
    fn(s.header["volumes"][0], s.header)
    return s.build()


def _many_chunks(vh, h):
    vh["chunks"] = [dict(vh["chunks"][0], z0=i) for i in range(100_000)]


# Forged headers with valid CRCs, each named for what it forges (see issue: memory was
# allocated from these numbers before they were checked).
FORGED = {
    "value_table_count_2e28": lambda vh, h: vh["value_table"].update(count=2 ** 28),
    "value_table_count_object": lambda vh, h: vh["value_table"].update(count={}),
    "member_declares_1GiB": lambda vh, h: h["members"].append(
        {"name": "x", "codec": "zstd", "size": 2 ** 30, "sha256": "0" * 64, "offset": 0,
         "length": 9, "crc32": 0}),
    "member_size_infinity": lambda vh, h: h["members"].append(
        {"name": "x", "codec": "zstd", "size": float("inf"), "sha256": "", "offset": 0,
         "length": 1, "crc32": 0}),
    "member_without_sha256": lambda vh, h: h["members"].append(
        {"name": "x", "codec": "raw", "size": 1, "offset": 0, "length": 1, "crc32": 0}),
    "z_2e28_one_chunk": lambda vh, h: (vh.update(shape=[2 ** 28, 40, 40]),
                                       vh["chunks"].__setitem__(0, dict(vh["chunks"][0], nz=2 ** 28))),
    "shape_2e40_voxels": lambda vh, h: vh.update(shape=[2 ** 20, 2 ** 10, 2 ** 10]),
    "constant_2e36_voxels": lambda vh, h: vh.update(codec="constant", shape=[2 ** 12] * 3),
    "100k_chunk_entries": _many_chunks,
    "chunk_offset_infinity": lambda vh, h: vh["chunks"][0].update(offset=float("inf")),
    "chunk_offset_nan": lambda vh, h: vh["chunks"][0].update(offset=float("nan")),
    "chunk_length_2e62": lambda vh, h: vh["chunks"][0].update(length=2 ** 62),
    "chunk_nz_bool": lambda vh, h: vh["chunks"][0].update(nz=True),
    "shape_string": lambda vh, h: vh.update(shape="2x6"),
    "shape_dimension_huge": lambda vh, h: vh.update(shape=[4, 40, 2 ** 70]),
    "dtype_nonsense": lambda vh, h: vh.update(dtype="nonsense"),
    "dtype_object": lambda vh, h: vh.update(dtype={"a": 1}),
    "chunks_list_of_ints": lambda vh, h: vh.update(chunks=[1]),
    "vmax_huge": lambda vh, h: vh.update(vmax=2 ** 60),
    "min_float": lambda vh, h: vh.update(min=0.5),
    "model_not_object": lambda vh, h: vh.update(model=[1]),
    "volumes_of_strings": lambda vh, h: h.update(volumes=["x"]),
    "members_not_list": lambda vh, h: h.update(members={"a": 1}),
    "source_not_object": lambda vh, h: h.update(source=[1, 2]),
    # format 1.2 fallback volumes: the data section is inflated only up to the declared shape
    "fallback_zstd_without_data": lambda vh, h: vh.update(codec="zstd"),
    "fallback_xz_declares_2e30_voxels": lambda vh, h: vh.update(
        codec="xz", data=vh["chunks"][0], shape=[2 ** 10] * 3),
    "fallback_zstd_declares_2e30_voxels": lambda vh, h: vh.update(
        codec="zstd", data=vh["chunks"][0], shape=[2 ** 10] * 3),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_header_is_refused_cheaply(name, real, sparse):
    arr, data = sparse if name.startswith("value_table") else real
    bad = _edit(data, FORGED[name])
    status, value, growth = run_limited(_outcome, bad, arr)
    assert status == "ok", value
    assert value in ("corrupt", "refused"), f"{name}: {value}"
    assert growth < RSS_BUDGET, f"{name}: resident memory grew by {growth >> 20} MiB"


# The model entry of a default-level stream (the blend and the network it runs), forged field by
# field with valid CRCs: a list where a name belongs reached a dict lookup and raised TypeError
# (found by a longer fuzz campaign, stop 18); a network entry of the wrong type was ignored.
FORGED_MODEL = {
    "network_name_list": lambda m: m["lstm"].update(name=[1, 2]),
    "network_name_object": lambda m: m["lstm"].update(name={"a": 1}),
    "network_sha256_int": lambda m: m["lstm"].update(sha256=7),
    "network_sha256_missing": lambda m: m["lstm"].pop("sha256"),
    "network_not_object": lambda m: m.update(lstm=[1]),
    "network_a_string": lambda m: m.update(lstm="medzip-blend-lstm"),
    "version_list": lambda m: m.update(version=[8]),
    "version_true": lambda m: m.update(version=True),
    "version_float": lambda m: m.update(version=8.0),
    "sha256_list": lambda m: m.update(sha256=[1]),
}


@pytest.fixture(scope="module")
def blend_real():
    arr = sample_array()[:4, :40, :40]
    data = medzip.compress(arr, level=5, chunk_slices=2)
    model = Stream.parse(data).header["volumes"][0]["model"]
    assert model["name"] == "medzip-blend" and isinstance(model.get("lstm"), dict)
    return arr, data


@pytest.mark.parametrize("name", sorted(FORGED_MODEL))
def test_forged_model_entry_is_refused(name, blend_real):
    arr, data = blend_real
    bad = _edit(data, lambda vh, h: FORGED_MODEL[name](vh["model"]))
    assert _outcome(bad, arr) in ("corrupt", "refused"), name


@pytest.mark.parametrize("edit", ["dtype", "leading_axis"])
def test_digest_binds_dtype_and_shape(real, edit):
    arr, data = real

    def forge(vh, h):
        if edit == "dtype":
            vh["dtype"] = "<i2" if vh["dtype"] == "<u2" else "<u2"
        else:  # same bytes, another array: only the digest can tell
            vh["shape"] = [1] + vh["shape"]

    out = _outcome(_edit(data, forge), arr)
    assert out == "corrupt", out


def _mutations(data: bytes, count: int, seed: int):
    """Byte flips anywhere, truncations, and header edits with the CRC recomputed."""
    rng = random.Random(seed)
    s = Stream.parse(data)
    values = [-1, 0, 1, 2 ** 31, 2 ** 63, 10 ** 30, float("inf"), float("nan"), -0.5, "x", "",
              None, True, [], {}, [1, 2], {"offset": 0}]

    def paths(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield prefix + (k,)
                yield from paths(v, prefix + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield prefix + (i,)
                yield from paths(v, prefix + (i,))

    all_paths = list(paths(s.header))
    for k in range(count):
        kind = k % 4
        if kind == 0:  # raw damage
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            yield "bit flips", bytes(b)
        elif kind == 1:  # truncation, or damage in the header with the CRC fixed
            if rng.random() < 0.5:
                yield "truncation", data[:rng.randrange(len(data))]
            else:
                b = bytearray(data)
                b[s.header_start + rng.randrange(s.body_start - 4 - s.header_start)] ^= \
                    1 << rng.randrange(8)
                yield "header flip, CRC fixed", recrc_header(bytes(b))
        else:  # a header field replaced, CRC fixed
            t = Stream.parse(data)
            path = rng.choice(all_paths)
            node = t.header
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = rng.choice(values) if kind == 2 else (
                node[path[-1]] * rng.choice([2, 3, 2 ** 20]) if isinstance(node[path[-1]], int)
                and not isinstance(node[path[-1]], bool) else rng.choice(values))
            yield "field edit, CRC fixed", t.build()


def _fuzz(data: bytes, original: np.ndarray, count: int, seed: int, outcome_of=None) -> dict:
    """Tally of ``outcome_of(blob, original)`` (default: _outcome) over _mutations."""
    outcome_of = outcome_of or _outcome
    tally: dict = {}
    worst = (0, "")
    for kind, blob in _mutations(data, count, seed):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        outcome = outcome_of(blob, original)
        key = (kind, outcome)
        tally[key] = tally.get(key, 0) + 1
        slow = time.perf_counter() - t0
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        worst = max(worst, (grew, kind))
        if slow > 20:
            tally[(kind, f"LEAK slow: {slow:.0f} s")] = 1
    return {"tally": tally, "worst_rss_growth_kib": worst}


def test_fuzzed_archives_raise_only_medzip_errors(real, sparse, blend_real):
    """>= 3,000 mutations of three real archives (one with a value table, one at the default
    level: the blend's model entry names its network)."""
    results = []
    for (arr, data), seed in ((real, 1), (sparse, 2), (blend_real, 3)):
        status, value, growth = run_limited(_fuzz, data, arr, 1000, seed, timeout=600)
        assert status == "ok", value
        results.append((value, growth))
    tally: dict = {}
    for value, _ in results:
        for key, n in value["tally"].items():
            tally[key] = tally.get(key, 0) + n
    print("\nfuzz outcomes:")
    for (kind, outcome), n in sorted(tally.items()):
        print(f"  {kind:24s} {outcome:10s} {n}")
    print("peak RSS growth per child (MiB):", [g >> 20 for _, g in results])
    leaks = {k: n for k, n in tally.items() if k[1] not in ("exact", "corrupt", "refused")}
    assert not leaks, leaks
    assert sum(tally.values()) >= 3000
    assert all(g < RSS_BUDGET for _, g in results)


def _with_section(data: bytes, pick, change) -> bytes:
    """``data`` with the section that ``pick(volume_header)`` names replaced by
    ``change(section bytes)``, appended to the body and sealed with a valid CRC: the decoder's
    own checks, not the CRC, must catch what follows."""
    s = Stream.parse(data)
    ref = pick(s.header["volumes"][0])
    new = change(s.section(ref))
    ref.update(offset=len(s.body), length=len(new), crc32=zlib.crc32(new) & 0xFFFFFFFF)
    s.body += new
    return s.build()


def _damaged(blob: bytes, rng: random.Random) -> bytes:
    """Cut short (sometimes) or a few bits flipped."""
    if rng.random() < 0.2 and len(blob) > 1:
        return blob[:rng.randrange(1, len(blob))]
    b = bytearray(blob)
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _forged_blend_values(blob: bytes, rng: random.Random) -> bytes:
    """A blend parameter block whose zstd-packed part (docs/FORMAT.md 7.6-7.10: class flags,
    thresholds, coefficients, previous-volume sets, wide sets, floor, padding value, mask shape
    and bits or rows, 7.12) has a value made extreme or bytes flipped, then is packed again: the parser, not
    zstd, must refuse it."""
    import zstandard
    # versions 2-8 carry a flags byte, versions 6-8 the fixed-rule experts' byte after it
    pos = 4 if blob[0] == 1 else 6 if blob[0] in (6, 7, 8) else 5
    (n_ls,) = struct.unpack_from("<H", blob, pos)
    cut = pos + 2 + n_ls
    raw = bytearray(zstandard.ZstdDecompressor().decompress(blob[cut:]))
    if rng.random() < 0.5 and len(raw) >= 8:
        at = rng.randrange(len(raw) - 7)
        raw[at:at + 8] = struct.pack("<q", rng.choice([-(2 ** 63), -1, 0, 2 ** 31, 2 ** 62, 2 ** 63 - 1]))
    elif rng.random() < 0.5:
        raw = raw[:rng.randrange(len(raw))] if rng.random() < 0.5 else raw + bytes(rng.randrange(1, 64))
    else:
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return blob[:cut] + zstandard.ZstdCompressor().compress(bytes(raw))


def _fuzz_sections(data: bytes, original: np.ndarray, count: int, seed: int,
                   blend: bool = True) -> dict:
    """Damaged sections in turn: the parameter block, (``blend``: its packed values forged,
    _forged_blend_values) and a coded chunk."""
    rng = random.Random(seed)
    n_chunks = len(Stream.parse(data).header["volumes"][0]["chunks"])
    kinds = ("parameter block", "parameter values", "coded chunk") if blend else \
        ("parameter block", "coded chunk")
    tally: dict = {}
    for k in range(count):
        t0 = time.perf_counter()
        kind = kinds[k % len(kinds)]
        if kind == "parameter block":
            pick, change = lambda vh: vh["predictor_params"], _damaged
        elif kind == "parameter values":
            pick, change = lambda vh: vh["predictor_params"], _forged_blend_values
        else:
            i = rng.randrange(n_chunks)
            pick, change = lambda vh: vh["chunks"][i], _damaged
        blob = _with_section(data, pick, lambda section: change(section, rng))
        outcome = _outcome(blob, original)
        if time.perf_counter() - t0 > 20:
            outcome = "LEAK slow"
        tally[(kind, outcome)] = tally.get((kind, outcome), 0) + 1
    return {"tally": tally}


def _assert_sections_fuzz_cleanly(data: bytes, arr: np.ndarray, count: int, seed: int) -> None:
    """``count`` damaged sections of ``data`` (in a memory-limited child): only exact output or
    a one-line MedzipError, and bounded memory growth."""
    status, value, growth = run_limited(_fuzz_sections, data, arr, count, seed, timeout=600)
    assert status == "ok", value
    print("\nsection fuzz outcomes:", value["tally"], "RSS growth MiB:", growth >> 20)
    leaks = {k: n for k, n in value["tally"].items() if k[1] not in ("exact", "corrupt", "refused")}
    assert not leaks, leaks
    assert growth < RSS_BUDGET


def _packed_masks(monkeypatch) -> None:
    """Encoders write padding masks bit-packed (as before version 8)."""
    import medzip.predictors.blend as blend

    monkeypatch.setattr(blend, "coded_mask_sizes", lambda mask: (len(mask), None))


def test_fuzzed_blend_sections_raise_only_medzip_errors(monkeypatch):
    """The default model's per-volume parameter block (LS sets, class coefficients, the
    version-2 flags, previous-volume coefficients and the packed padding mask) and its coded
    chunks, damaged with valid CRCs: only exact output or a one-line MedzipError, bounded memory.
    A real masked 4-D EPI crop from nibabel (previous-volume context and mask both in play)."""
    from conftest import _nibabel_test_file, nifti_stored
    path = _nibabel_test_file("example4d.nii.gz")
    if path is None:
        pytest.skip("nibabel's example4d.nii.gz is missing")
    arr = np.ascontiguousarray(nifti_stored(path)[:, 8:12, 0:40, 0:48])
    _packed_masks(monkeypatch)  # (version 8 below)
    data = medzip.compress(arr, level=5, chunk_slices=2)
    vh = Stream.parse(data).header["volumes"][0]
    assert vh["model"]["name"] == "medzip-blend" and vh["model"]["version"] == 2
    _assert_sections_fuzz_cleanly(data, arr, 300, seed=3)


def test_fuzzed_wide_blend_sections_raise_only_medzip_errors():
    """The same for a stream with wide class sets (a second class mask and 42-coefficient
    sets in the parameter block) and, since stop 15, the fixed-rule experts' byte (version 6):
    the blend3 golden crop of real cine MR, in two chunks."""
    from medzip.predictors.blend import BlendPredictor

    arr = wide_heart()
    data = medzip.compress(arr, level=5, chunk_slices=5)
    stream = Stream.parse(data)
    vh = stream.header["volumes"][0]
    assert vh["model"]["name"] == "medzip-blend" and vh["model"]["version"] == 6
    assert BlendPredictor.from_params(stream.section(vh["predictor_params"])).wide
    _assert_sections_fuzz_cleanly(data, arr, 150, seed=4)


@pytest.mark.parametrize("version", [7, 8])
def test_fuzzed_padding_value_blend_sections_raise_only_medzip_errors(version, monkeypatch):
    """The same for a version-7 stream (a padding mask whose pixels hold a value above the
    floor, carried in the parameter block): real head CT zero-filled in HU outside its field of
    view (the blend5 golden crop with 0 HU for its -2000 HU padding), in two chunks; and for
    the version-8 stream the encoder writes today (the same, the mask by rows)."""
    from conftest import zero_padded_ct

    from medzip.predictors.blend import BlendPredictor

    arr = np.ascontiguousarray(zero_padded_ct()[:8])
    if version == 7:
        _packed_masks(monkeypatch)
    data = medzip.compress(arr, level=5, chunk_slices=4)
    stream = Stream.parse(data)
    vh = stream.header["volumes"][0]
    assert vh["model"]["name"] == "medzip-blend" and vh["model"]["version"] == version
    assert BlendPredictor.from_params(stream.section(vh["predictor_params"])).pad_value > 0
    _assert_sections_fuzz_cleanly(data, arr, 150, seed=6 + (version == 8))


def test_fuzzed_deep_blend_sections_raise_only_medzip_errors():
    """The same for a version-4 stream with deep class sets (flag 32: 76-coefficient sets,
    chunks with four padding slices): a crop of the blend4deep golden volume, in two chunks."""
    from medzip.predictors.blend import BlendPredictor

    arr = np.ascontiguousarray(deep_trio()[:, 16:48, 16:48])
    data = medzip.compress(arr, level=5, chunk_slices=16)
    stream = Stream.parse(data)
    vh = stream.header["volumes"][0]
    assert vh["model"]["name"] == "medzip-blend" and vh["model"]["version"] == 4
    params = stream.section(vh["predictor_params"])
    assert BlendPredictor.from_params(params).deep
    _assert_sections_fuzz_cleanly(data, arr, 150, seed=5)
