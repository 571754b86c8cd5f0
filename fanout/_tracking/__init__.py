"""Completion tracking: the ledger, notification parsing, and the SQS, S3 and hybrid sources."""

from ._ledger import DEFAULT_REMEMBER, Ledger, LedgerStatistics, outcome_of
from ._parse import Ignored, Malformed, Parsed, ParseResult, parse_message, parse_notification
from ._tracker import Tracker, TrackerStatistics, open_tracker

__all__ = [
    "DEFAULT_REMEMBER",
    "Ignored",
    "Ledger",
    "LedgerStatistics",
    "Malformed",
    "ParseResult",
    "Parsed",
    "Tracker",
    "TrackerStatistics",
    "open_tracker",
    "outcome_of",
    "parse_message",
    "parse_notification",
]
