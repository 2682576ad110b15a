"""phonelabel: framewise TIMIT phone labelling with a unidirectional LSTM."""

from __future__ import annotations

from phonelabel.errors import PhonelabelError

__version__ = "0.4.3"

__all__ = ["PhonelabelError", "__version__"]
