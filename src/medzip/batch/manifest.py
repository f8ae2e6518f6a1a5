"""The batch manifest: one SQLite table in DST, one row per input (standard library sqlite3).

Only the client process writes it, one committed transaction per finished input, so a killed
client loses at most the rows of results it had not yet received; those archives are found and
re-checked (never trusted from the row) by the next run. The row is a report and the restore
plan: ``files`` (JSON) lists each source file's relative path, size, mode, mtime and SHA-256.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .. import __version__
from .planner import MANIFEST_NAME

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    path            TEXT PRIMARY KEY,   -- input relative to SRC (a file, or a DICOM series folder)
    kind            TEXT NOT NULL,      -- coded | verbatim | skipped
    format          TEXT,               -- adapter name (dicom, nifti, npy, nrrd, metaimage) or file
    size            INTEGER,            -- bytes read from SRC (all files of the input)
    source_sha256   TEXT,               -- of the file; of the sorted (path, sha256) list for several
    status          TEXT NOT NULL,      -- pending | done | failed | skipped
    archive         TEXT,               -- output relative to DST
    archive_bytes   INTEGER,
    bits_per_voxel  REAL,
    duration_s      REAL,               -- seconds the task took (0 when adopted on a rerun)
    verified        INTEGER,            -- 1: decoded and checked against the source
    error           TEXT,
    files           TEXT,               -- JSON [{rel, size, mode, mtime_ns, sha256}]
    updated         REAL                -- UNIX time of the last change
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT);
"""

_COLUMNS = ("path", "kind", "format", "size", "source_sha256", "status", "archive", "archive_bytes",
            "bits_per_voxel", "duration_s", "verified", "error", "files", "updated")


class Manifest:
    def __init__(self, dst, *, create: bool = False):
        self.path = Path(dst) / MANIFEST_NAME
        if not create and not self.path.is_file():
            from ..errors import MedzipError
            raise MedzipError(f"{self.path}: no batch manifest (is this a medzip batch output?)")
        # isolation_level=None: explicit transactions, one per recorded result.
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        if create:
            self.set_info(schema=str(SCHEMA_VERSION), writer=f"medzip {__version__}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_info(self, **values) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)",
                                [(k, str(v)) for k, v in values.items()])

    def info(self) -> dict:
        return dict(self.db.execute("SELECT key, value FROM info"))

    def _tx(self):
        db = self.db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, *rest):
                db.execute("COMMIT" if kind is None else "ROLLBACK")
        return _Tx()

    def upsert(self, row: dict) -> None:
        """Insert or update one input's row (only the given columns change); one commit."""
        self.upsert_many([row])

    def upsert_many(self, rows: list[dict]) -> None:
        """Several rows in one transaction (a rerun records thousands of kept inputs at once)."""
        now = time.time()
        with self._tx():
            for row in rows:
                row = {**row, "updated": now}
                if isinstance(row.get("files"), list):
                    row["files"] = json.dumps(row["files"], separators=(",", ":"))
                cols = [c for c in _COLUMNS if c in row]
                sets = ", ".join(f"{c}=excluded.{c}" for c in cols if c != "path")
                self.db.execute(f"INSERT INTO inputs ({', '.join(cols)}) VALUES "
                                f"({', '.join('?' * len(cols))}) ON CONFLICT(path) DO UPDATE SET {sets}",
                                [row[c] for c in cols])

    def rows(self, status: str | None = None) -> list[dict]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM inputs"
        args: tuple = ()
        if status:
            sql, args = sql + " WHERE status = ?", (status,)
        return [_decoded(values) for values in self.db.execute(sql + " ORDER BY path", args)]

    def row(self, path: str) -> dict | None:
        values = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM inputs WHERE path = ?",
                                 (path,)).fetchone()
        return None if values is None else _decoded(values)

    def summary(self) -> dict:
        """Totals by status, bytes in and out, overall ratio, and the failed inputs."""
        by_status = {s: n for s, n in self.db.execute(
            "SELECT status, COUNT(*) FROM inputs GROUP BY status")}
        (n_in, n_out, coded_in, coded_out, seconds), = self.db.execute(
            "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(archive_bytes), 0), "
            "COALESCE(SUM(CASE WHEN kind='coded' THEN size END), 0), "
            "COALESCE(SUM(CASE WHEN kind='coded' THEN archive_bytes END), 0), "
            "COALESCE(SUM(duration_s), 0) FROM inputs WHERE status = 'done'")
        failures = [{"path": p, "error": e} for p, e in self.db.execute(
            "SELECT path, error FROM inputs WHERE status = 'failed' ORDER BY path")]
        skipped = [{"path": p, "reason": e} for p, e in self.db.execute(
            "SELECT path, error FROM inputs WHERE status = 'skipped' ORDER BY path")]
        return {"manifest": str(self.path), "inputs": sum(by_status.values()),
                "by_status": by_status, "bytes_in": n_in, "bytes_out": n_out,
                "ratio": n_in / n_out if n_out else 0.0,
                "coded_ratio": coded_in / coded_out if coded_out else 0.0,
                "task_seconds": seconds, "failures": failures, "skipped": skipped,
                **{f"info_{k}": v for k, v in self.info().items()}}


def _decoded(values) -> dict:
    row = dict(zip(_COLUMNS, values))
    row["files"] = json.loads(row["files"]) if row["files"] else []
    return row
