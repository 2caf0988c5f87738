"""`federation.compression`: which encoding a deployment's workers use for their updates.

    none | fp16 | int8 | topk:FRACTION | topk:FRACTION+int8       (e.g. topk:0.01+int8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgefed.errors import user_error
from edgefed.wire import Encoding

KEY = "federation.compression"
_FORMS = "none, fp16, int8, topk:FRACTION or topk:FRACTION+int8 (e.g. topk:0.01+int8)"


@user_error
class CompressionSettingError(ValueError):
    """A federation.compression value that is not one of the forms above; the message says which."""


@dataclass(frozen=True)
class CompressionSetting:
    """One parsed setting. encoding is None for `none` (plain float32 deltas)."""

    encoding: Encoding | None = None
    fraction: float = 1.0  # top-k only: the share of each tensor's elements sent per update

    def __str__(self) -> str:
        if self.encoding is None:
            return "none"
        if self.encoding is Encoding.TOPK:
            return f"topk:{self.fraction:g}"
        if self.encoding is Encoding.TOPK_INT8:
            return f"topk:{self.fraction:g}+int8"
        return self.encoding.label

    @property
    def lossy(self) -> bool:
        return self.encoding is not None


NONE = CompressionSetting()


def parse_compression(value: object) -> CompressionSetting:
    """The setting for a configuration value; CompressionSettingError (one line) if it is not valid."""
    if value is None:
        return NONE
    if not isinstance(value, str):
        raise CompressionSettingError(f"{KEY} must be a string ({_FORMS}), got {value!r}")
    text = value.strip().lower()
    simple = {"none": NONE, "fp16": CompressionSetting(Encoding.FP16), "int8": CompressionSetting(Encoding.INT8)}
    if text in simple:
        return simple[text]
    if text in {"topk", "topk+int8"}:
        raise CompressionSettingError(f"{KEY} {value!r} needs a fraction: {_FORMS}")
    if not text.startswith("topk:"):
        raise CompressionSettingError(f"{KEY} {value!r} is not one of {_FORMS}")
    number, plus, suffix = text.removeprefix("topk:").partition("+")
    if plus and suffix != "int8":
        raise CompressionSettingError(f"{KEY} {value!r}: top-k combines only with int8 ({_FORMS})")
    try:
        fraction = float(number)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:  # NaN fails too
        raise CompressionSettingError(f"{KEY} {value!r}: the fraction must be a number in (0, 1], e.g. topk:0.01")
    return CompressionSetting(Encoding.TOPK_INT8 if plus else Encoding.TOPK, fraction)
