"""The one exception type for bad input, with a machine-readable reason.

Every rejection of an incoming message ends up in a dead letter and in a
metric label, so the reason must be a short, stable code (not free text), and
all codes live in one tuple so dashboards and tests can enumerate them.
"""

from __future__ import annotations

#: Reason codes for rejected frames.  The first group comes from decoding a
#: single frame (``schemas.frames``); the second from the per-channel windowing
#: state (``streams``), kept here so that all dead-letter reasons are listed in
#: one place.  Other modules may build ``REASONS + ("their_code",)``;
#: ``FrameError`` does not refuse codes missing from this tuple.
FRAME_REASONS: tuple[str, ...] = (
    "malformed_msgpack",
    "not_a_map",
    "missing_field",
    "bad_field",
    "unknown_field",
    "unsupported_version",
    "unknown_encoding",
    "bad_sample_rate",
    "misaligned_audio",
    "non_finite_audio",
    "frame_too_large",
    "frame_too_long",
    "key_mismatch",
)
WINDOW_REASONS: tuple[str, ...] = ("out_of_order", "gap_too_large", "capacity")
#: Reasons for rejecting a JSON event in ``schemas.events.parse_event``.
EVENT_REASONS: tuple[str, ...] = ("malformed_json", "unknown_type")
REASONS: tuple[str, ...] = FRAME_REASONS + WINDOW_REASONS + EVENT_REASONS


class FrameError(ValueError):
    """Bad input: ``reason`` is a short code (see ``REASONS``), ``detail`` says what was wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if not isinstance(reason, str) or not reason:
            raise TypeError("FrameError reason must be a non-empty str")
        self.reason = reason
        self.detail = detail
        super().__init__(reason, detail)

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason

    def __repr__(self) -> str:
        return f"FrameError({self.reason!r}, {self.detail!r})"

    def __reduce__(self):  # keep reason/detail across pickling (multiprocessing, Faust)
        return (type(self), (self.reason, self.detail))
