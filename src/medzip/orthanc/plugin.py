"""The script Orthanc's Python plugin runs (``"PythonScript"`` in the configuration).

It is executed by Orthanc's embedded interpreter, not imported by medzip: it reads the
``"Medzip"`` section that ``medzip orthanc config`` writes, puts the recorded Python paths on
``sys.path`` (the embedded interpreter does not know the virtual environment medzip lives in),
and registers :class:`medzip.orthanc.storage.StorageArea` as Orthanc's storage area. Every read
is checked (CRC-32s, SHA-256 of the instance); a damaged file raises, so Orthanc answers with an
error and never with other bytes.
"""
import json
import os
import site
import sys

import orthanc  # provided by Orthanc's embedded interpreter only

# The plugin may put this script's folder first on sys.path; its sibling modules (config.py,
# cli.py, ...) must not shadow top-level packages of the same name.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

_SETTINGS = json.loads(orthanc.GetConfiguration()).get("Medzip") or {}
_WANTED = ".".join(str(_SETTINGS.get("Python", "")).split(".")[:2])
if _WANTED and _WANTED != "%d.%d" % sys.version_info[:2]:
    # compiled dependencies (numpy, numba, ...) of another minor version would crash or misbehave
    _MSG = (f"medzip plugin: the configuration records Python {_WANTED} packages but Orthanc embeds "
            f"Python {sys.version.split()[0]}: run 'medzip orthanc config' from a Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} environment")
    orthanc.LogError(_MSG)
    raise RuntimeError(_MSG)
for _path in _SETTINGS.get("PythonPath") or []:
    if os.path.isdir(_path):
        site.addsitedir(_path)  # also runs .pth files (editable installs live there)
        if _path in sys.path:  # addsitedir appends: the recorded environment must win
            sys.path.remove(_path)
            sys.path.insert(0, _path)

from medzip.orthanc.storage import StorageArea  # noqa: E402  (needs the paths above)

_DICOM = int(orthanc.ContentType.DICOM)


def _storage() -> StorageArea:
    root = _SETTINGS.get("StorageDirectory")
    if not root:
        raise RuntimeError("medzip plugin: the configuration has no Medzip.StorageDirectory")
    level = _SETTINGS.get("Level")
    return StorageArea(root, level=None if level is None else int(level),
                       verify=bool(_SETTINGS.get("VerifyOnWrite", True)))


_AREA = _storage()


def _logged(action: str, uuid: str, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        # Orthanc turns the exception into an error answer (HTTP 500 / DICOM failure status);
        # the log keeps the reason, which the HTTP client does not see.
        orthanc.LogError(f"medzip storage: {action} {uuid}: {exc}")
        raise


def create(uuid, content_type, data):
    _logged("create", uuid, _AREA.create, uuid, int(content_type) == _DICOM, data)


def read(uuid, content_type):
    return _logged("read", uuid, _AREA.read, uuid)


def remove(uuid, content_type):
    _logged("remove", uuid, _AREA.remove, uuid)


orthanc.RegisterStorageArea(create, read, remove)
orthanc.LogWarning(f"medzip storage area: {_AREA.root} (level {_AREA.level or 'default'})")
