"""Turn bench results into comparisons, a rich table, JSON/CSV files, a PNG plot and Markdown.

Only ``status == "ok"`` results (exact round trip) enter any figure; failed and skipped ones
are listed with their reasons. Field meanings are documented in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
from collections import defaultdict

from .runner import Result

REFERENCE = "medzip-default"
RESULT_FIELDS = list(Result.__dataclass_fields__)
SUMMARY_FIELDS = [
    "group", "codec", "family", "files_ok", "files_failed", "files_skipped", "voxels",
    "raw_bytes", "compressed_bytes", "bits_per_voxel", "ratio", "encode_mb_s", "decode_mb_s",
    "encode_voxels_s", "decode_voxels_s", "peak_mem_bytes", "rel_medzip_default",
    "rel_best_standard", "notes",
]


def _ok(r: Result) -> bool:
    return r.status == "ok" and r.verified and bool(r.compressed_bytes)


def add_relative(results: list[Result], reference: str = REFERENCE) -> None:
    """Per volume: size relative to medzip default and to the best verified standard codec."""
    by_vol = defaultdict(list)
    for r in results:
        by_vol[(r.file, r.volume)].append(r)
    for rows in by_vol.values():
        ok = [r for r in rows if _ok(r)]
        ref = next((r for r in ok if r.codec == reference), None)
        std = [r for r in ok if r.family != "medzip"]
        best = min(std, key=lambda r: r.compressed_bytes, default=None)
        for r in rows:
            r.best_standard_codec = best.codec if best else None
            if not _ok(r):
                r.rel_medzip_default = r.rel_best_standard = None
                continue
            r.rel_medzip_default = r.compressed_bytes / ref.compressed_bytes if ref else None
            r.rel_best_standard = r.compressed_bytes / best.compressed_bytes if best else None


def summarize(results: list[Result], reference: str = REFERENCE) -> list[dict]:
    """Per modality and 'overall', per codec: totals over the volumes the codec got right.

    Relative sizes are ratios of summed bytes over the volumes where both sides are exact, so
    a codec is never credited for a volume it failed.
    """
    add_relative(results, reference)
    codecs = list(dict.fromkeys(r.codec for r in results))
    families = {r.codec: r.family for r in results}
    groups = sorted({r.modality for r in results})
    ref = {(r.file, r.volume): r.compressed_bytes for r in results if r.codec == reference and _ok(r)}
    best = {}
    for r in results:
        if _ok(r) and r.family != "medzip":
            key = (r.file, r.volume)
            best[key] = min(best.get(key, r.compressed_bytes), r.compressed_bytes)
    rows = []
    for group in ["overall", *groups] if len(groups) > 1 else groups:
        for codec in codecs:
            sel = [r for r in results if r.codec == codec and group in ("overall", r.modality)]
            ok = [r for r in sel if _ok(r)]
            row = {k: None for k in SUMMARY_FIELDS}
            row.update(group=group, codec=codec, family=families[codec], files_ok=len(ok),
                       files_failed=sum(r.status == "failed" for r in sel),
                       files_skipped=sum(r.status == "skipped" for r in sel), notes="")
            notes = defaultdict(int)
            for r in ok:
                for n in r.notes:
                    notes[n] += 1
            row["notes"] = "; ".join(f"{n} ({c}/{len(ok)})" for n, c in sorted(notes.items()))
            if ok:
                vox = sum(r.voxels for r in ok)
                raw = sum(r.raw_bytes for r in ok)
                comp = sum(r.compressed_bytes for r in ok)
                enc = sum(r.encode_s for r in ok)
                dec = sum(r.decode_s for r in ok)
                mems = [m for r in ok for m in (r.peak_mem_encode_bytes, r.peak_mem_decode_bytes)
                        if m is not None]
                row.update(voxels=vox, raw_bytes=raw, compressed_bytes=comp,
                           bits_per_voxel=8.0 * comp / vox, ratio=raw / comp,
                           encode_mb_s=raw / 1e6 / enc if enc else None,
                           decode_mb_s=raw / 1e6 / dec if dec else None,
                           encode_voxels_s=vox / enc if enc else None,
                           decode_voxels_s=vox / dec if dec else None,
                           peak_mem_bytes=max(mems) if mems else None)
                pairs = [(r.compressed_bytes, ref[(r.file, r.volume)]) for r in ok
                         if (r.file, r.volume) in ref]
                if pairs:
                    row["rel_medzip_default"] = sum(a for a, _ in pairs) / sum(b for _, b in pairs)
                pairs = [(r.compressed_bytes, best[(r.file, r.volume)]) for r in ok
                         if (r.file, r.volume) in best]
                if pairs:
                    row["rel_best_standard"] = sum(a for a, _ in pairs) / sum(b for _, b in pairs)
            rows.append(row)
    return rows


# -- files ----------------------------------------------------------------------------------------
def environment(extra: dict | None = None) -> dict:
    """Machine and library versions, so a figure can be traced to what produced it."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("medzip", "numpy", "imagecodecs", "pyppmd", "zstandard", "numba", "constriction"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }
    env.update(extra or {})
    return env


def write_json(path, results: list[Result], summary: list[dict], settings: dict) -> None:
    doc = {"schema": "medzip-bench/1", "environment": environment(), "settings": settings,
           "results": [r.to_dict() for r in results], "summary": summary}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")


def write_csv(path, results: list[Result]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        w.writeheader()
        for r in results:
            d = r.to_dict()
            d["shape"] = "x".join(map(str, d["shape"]))
            d["notes"] = "; ".join(d["notes"])
            w.writerow(d)


def require_matplotlib() -> None:
    """Fail with one line naming the ``bench`` extra when ``--plot`` cannot work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from medzip.errors import MedzipError

        raise MedzipError('--plot needs matplotlib, which is not installed: '
                          'pip install "medzip[bench]"') from None


def write_plot(path, summary: list[dict], title: str = "") -> None:
    """Bits/voxel against decode speed, one point per codec (overall group)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    group = "overall" if any(r["group"] == "overall" for r in summary) else summary[0]["group"]
    pts = [r for r in summary if r["group"] == group and r["bits_per_voxel"] and r["decode_mb_s"]]
    colors = {"medzip": "tab:red", "image": "tab:blue", "video": "tab:purple",
              "general": "tab:gray"}
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for fam in colors:
        sel = [r for r in pts if r["family"] == fam]
        if sel:
            ax.scatter([r["bits_per_voxel"] for r in sel], [r["decode_mb_s"] for r in sel],
                       c=colors[fam], label=fam, s=45, zorder=3)
    for r in pts:
        ax.annotate(r["codec"], (r["bits_per_voxel"], r["decode_mb_s"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("bits per voxel (lower is better)")
    ax.set_ylabel("decode speed, MB/s of raw voxels (log)")
    n = max((r["files_ok"] for r in pts), default=0)
    ax.set_title(title or f"medzip bench: {group} ({n} volume{'s' if n != 1 else ''})")
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


# -- terminal and Markdown --------------------------------------------------------------------------
def _f(x, spec=".3f"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _mem(b):
    return "" if b is None else f"{b / 2**20:.0f} MiB" if b >= 2**20 else f"{b / 1024:.0f} KiB"


SUMMARY_COLUMNS = [
    ("codec", lambda r: r["codec"]),
    ("ok/fail/skip", lambda r: f"{r['files_ok']}/{r['files_failed']}/{r['files_skipped']}"),
    ("bits/voxel", lambda r: _f(r["bits_per_voxel"])),
    ("ratio", lambda r: _f(r["ratio"], ".2f")),
    ("rel. medzip-default", lambda r: _f(r["rel_medzip_default"])),
    ("rel. best std", lambda r: _f(r["rel_best_standard"])),
    ("enc MB/s", lambda r: _f(r["encode_mb_s"], ".2f")),
    ("dec MB/s", lambda r: _f(r["decode_mb_s"], ".2f")),
    ("peak mem", lambda r: _mem(r["peak_mem_bytes"])),
]


def problems(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status != "ok"]


def print_report(results: list[Result], summary: list[dict], *, details: bool = False,
                 console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (logs, files) gets a wide table instead of rich's 80-column default.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    if details:
        t = Table(title="per volume", show_lines=False)
        for col in ("volume", "codec", "status", "bits/voxel", "ratio", "enc MB/s", "dec MB/s",
                    "enc Mvox/s", "dec Mvox/s", "mem enc/dec", "notes / reason"):
            t.add_column(col, overflow="fold", no_wrap=col in ("volume", "codec"))
        for r in results:
            mem = "" if r.peak_mem_encode_bytes is None else \
                f"{_mem(r.peak_mem_encode_bytes)}/{_mem(r.peak_mem_decode_bytes)}"
            t.add_row(r.volume, r.codec, r.status, _f(r.bits_per_voxel), _f(r.ratio, ".2f"),
                      _f(r.encode_mb_s, ".2f"), _f(r.decode_mb_s, ".2f"),
                      _f(r.encode_voxels_s and r.encode_voxels_s / 1e6, ".2f"),
                      _f(r.decode_voxels_s and r.decode_voxels_s / 1e6, ".2f"), mem,
                      r.reason or "; ".join(r.notes))
        console.print(t)
    for group in dict.fromkeys(r["group"] for r in summary):
        rows = [r for r in summary if r["group"] == group]
        t = Table(title=f"{group}: {max(r['files_ok'] + r['files_failed'] + r['files_skipped'] for r in rows)} volume(s)")
        for name, _ in SUMMARY_COLUMNS:
            t.add_column(name, justify="left" if name == "codec" else "right",
                         no_wrap=name == "codec")
        for r in rows:
            style = "bold red" if r["family"] == "medzip" else None
            t.add_row(*(fn(r) for _, fn in SUMMARY_COLUMNS), style=style)
        console.print(t)
    bad = problems(results)
    if bad:
        t = Table(title="failed / skipped (not counted)")
        for col in ("volume", "codec", "status", "reason"):
            t.add_column(col, overflow="fold")
        for r in bad:
            t.add_row(r.volume, r.codec, r.status, r.reason)
        console.print(t)
    notes = sorted({n for r in results for n in r.notes})
    if notes:
        console.print("notes: " + "; ".join(notes), style="dim")
    ok = [r for r in results if r.status == "ok"]
    if ok:
        console.print(f"peak memory: {ok[0].mem_method.split(' ')[0]} "
                      "(see docs/BENCHMARKS.md); speeds: best of "
                      f"{ok[0].repeat} run(s), one thread", style="dim")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def markdown(results: list[Result], summary: list[dict]) -> str:
    """Summary per group, bits/voxel per volume, and what was not counted, as Markdown."""
    parts = []
    for group in dict.fromkeys(r["group"] for r in summary):
        rows = [r for r in summary if r["group"] == group]
        n = max(r["files_ok"] + r["files_failed"] + r["files_skipped"] for r in rows)
        parts.append(f"**{group}** ({n} volume{'s' if n != 1 else ''})\n")
        parts.append(_md_table([c for c, _ in SUMMARY_COLUMNS],
                               [[fn(r) for _, fn in SUMMARY_COLUMNS] for r in rows]) + "\n")
    codecs = list(dict.fromkeys(r.codec for r in results))
    vols = list(dict.fromkeys((r.volume, r.modality) for r in results))
    cell = {(r.volume, r.codec): r for r in results}

    def show(r):
        if r is None:
            return ""
        if r.status == "ok":
            best = r.best_standard_codec == r.codec
            return f"**{r.bits_per_voxel:.3f}**" if best else f"{r.bits_per_voxel:.3f}"
        return r.status
    parts.append("**bits/voxel per volume** (bold: best standard codec on that volume)\n")
    parts.append(_md_table(["volume", "modality", *codecs],
                           [[v, m, *(show(cell.get((v, c))) for c in codecs)] for v, m in vols])
                 + "\n")
    nvol = len(vols)
    bad = defaultdict(list)
    for r in problems(results):
        bad[(r.codec, r.status, r.reason)].append(r.volume)
    if bad:
        parts.append("**not counted**\n")
        parts.append("\n".join(
            f"- {codec} {status} on "
            + (f"all {nvol} volumes" if len(v) == nvol > 1 else ", ".join(v)) + f": {reason}"
            for (codec, status, reason), v in bad.items()) + "\n")
    notes = defaultdict(lambda: (dict(), dict()))
    for r in results:
        for n in r.notes:
            codecs_, vols_ = notes[n]
            codecs_[r.codec] = None
            vols_[r.volume + (f" (+{r.offset})" if r.offset else "")] = None
    if notes:
        parts.append("**notes** (the model medzip used; conversions made for the standard "
                     "codecs, see Conventions)\n")
        parts.append("\n".join(
            f"- {n}: {', '.join(c)} on "
            + (f"all {nvol} volumes" if len(v) == nvol > 1 else ", ".join(v))
            for n, (c, v) in sorted(notes.items())) + "\n")
    return "\n".join(parts)


BEGIN_MARK, END_MARK = "<!-- bench:begin -->", "<!-- bench:end -->"


def replace_marked(text: str, content: str, begin: str = BEGIN_MARK, end: str = END_MARK) -> str:
    """``text`` with everything between the two marker lines replaced by ``content``."""
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers {begin} ... {end} not found in order")
    return text[: i + len(begin)] + "\n" + content.strip("\n") + "\n" + text[j:]
