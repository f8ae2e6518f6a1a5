"""``medzip bench``: medzip next to JPEG-XL, JPEG-LS, JPEG 2000, HTJ2K, HEVC and byte compressors.

Layout: ``codecs`` (adapters), ``runner`` (measure with an exact round-trip check),
``report`` (tables, JSON/CSV, plot, Markdown), ``cli`` (the ``bench`` subcommand).
"""
from .codecs import Codec, Encoded, Unsupported, all_codecs, select
from .report import markdown, summarize, write_csv, write_json, write_plot
from .runner import Result, Volume, load_volumes, measure, run_bench

__all__ = ["Codec", "Encoded", "Unsupported", "all_codecs", "select", "Result", "Volume",
           "load_volumes", "measure", "run_bench", "summarize", "markdown", "write_json",
           "write_csv", "write_plot"]
