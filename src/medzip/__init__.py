"""medzip: lossless compression of 3-D medical images with an integer-exact LSTM predictor."""
__version__ = "0.1.0"

from .api import compress, compress_payload, decompress, decompress_payload, inspect, verify  # noqa: E402
from .errors import CorruptStreamError, MedzipError  # noqa: E402

__all__ = ["compress", "decompress", "compress_payload", "decompress_payload", "inspect", "verify",
           "MedzipError", "CorruptStreamError", "__version__"]
