"""The complete Orthanc configuration that runs Orthanc on a medzip storage area.

``medzip orthanc config STORAGE_DIR`` prints it; ``Orthanc config.json`` is then all a user runs.
Safe by default: the REST API answers only loopback clients (``RemoteAccessAllowed: false``)
and the DICOM server accepts C-STORE only from one known modality on 127.0.0.1. docs/ORTHANC.md
says how to open either deliberately (with authentication / known modalities).
"""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..errors import MedzipError

PLUGIN_SCRIPT = Path(__file__).with_name("plugin.py")
PLUGIN_LIBRARY = "libOrthancPython.so"
# Where Debian/Ubuntu (orthanc-python) and source builds put the Python plugin.
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins",
                "/usr/local/lib/orthanc")
#: The calling AET, host and port of the one modality allowed to C-STORE by default.
LOCAL_MODALITY = ("MEDZIPSCU", "127.0.0.1", 104)


def find_python_plugin() -> Path:
    """libOrthancPython.so from ``dpkg -L orthanc-python``, else the usual folders."""
    candidates: list[Path] = []
    if shutil.which("dpkg"):
        try:
            listed = subprocess.run(["dpkg", "-L", "orthanc-python"], capture_output=True,
                                    text=True, timeout=30, check=False).stdout.split()
        except (OSError, subprocess.SubprocessError):
            listed = []
        candidates += [Path(p) for p in listed if Path(p).name.startswith(PLUGIN_LIBRARY)]
    for folder in _PLUGIN_DIRS:
        candidates += sorted(Path(folder).glob(PLUGIN_LIBRARY + "*"))
    for path in candidates:
        if path.is_file():
            return path
    raise MedzipError("Orthanc's Python plugin (libOrthancPython.so) not found: install it with "
                      "'apt-get install orthanc orthanc-python'")


def python_paths() -> list[str]:
    """Folders Orthanc's embedded interpreter needs to import medzip and its dependencies: this
    interpreter's site-packages (a virtual environment's included) and the folder medzip is
    imported from (covers source checkouts)."""
    import medzip

    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    paths.append(str(Path(medzip.__file__).resolve().parent.parent))
    out: list[str] = []
    for p in paths:
        p = str(Path(p).resolve())
        if p not in out and Path(p).is_dir():
            out.append(p)
    return out


def build_config(storage_dir, *, http_port: int = 8042, dicom_port: int = 4242,
                 level: int | None = None, plugin: Path | None = None, name: str = "medzip",
                 aet: str = "MEDZIP", verify: bool = True) -> dict:
    """The configuration as a dict (``json.dumps`` it). ``storage_dir`` holds both the
    attachments (Orthanc's own ab/cd/uuid layout) and Orthanc's SQLite index."""
    storage = Path(storage_dir).expanduser().resolve()
    for port, what in ((http_port, "HTTP"), (dicom_port, "DICOM")):
        if not 1 <= int(port) <= 65535:
            raise MedzipError(f"{what} port {port} is not in 1..65535")
    if level is not None and not 1 <= int(level) <= 9:
        raise MedzipError(f"compression level must be 1..9, got {level}")
    if storage.exists() and not storage.is_dir():
        raise MedzipError(f"{storage}: exists and is not a folder")
    plugin = Path(plugin) if plugin is not None else find_python_plugin()
    scu_aet, scu_host, scu_port = LOCAL_MODALITY
    return {
        "Name": name,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        # medzip replaces Orthanc's zlib: compressing twice would hide the DICOM from medzip
        "StorageCompression": False,
        "HttpPort": int(http_port),
        "DicomPort": int(dicom_port),
        "DicomAet": aet,
        # Safe by default: REST only from this machine, no password needed there.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        # Orthanc 1.10 cannot bind the DICOM port to one interface; instead only the known
        # modality below, connecting from 127.0.0.1, may store or echo.
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"local": [scu_aet, scu_host, scu_port]},
        "ExecuteLuaEnabled": False,
        "Plugins": [str(plugin)],
        "PythonScript": str(PLUGIN_SCRIPT.resolve()),
        "PythonVerbose": False,
        "Medzip": {
            "StorageDirectory": str(storage),
            "Level": None if level is None else int(level),
            "VerifyOnWrite": bool(verify),
            "PythonPath": python_paths(),
            "Python": sys.version.split()[0],
        },
    }
