"""X12 EDI (ASC X12 4010 and 5010): tokenizer, envelopes, transaction sets, acknowledgments, writer.

Public API: :class:`X12Parser` (registered as ``x12``), the nouns of
:mod:`parsers.x12.model`, the loop helpers of :mod:`parsers.x12.sets`,
:mod:`parsers.x12.acks` (TA1, 999, 997) and :mod:`parsers.x12.writer`
(outbound interchanges). Partner profiles live in :mod:`parsers.x12.partners`.
"""

from parsers.x12.model import FunctionalGroup, Interchange, InterchangeReport, TransactionSet
from parsers.x12.parser import X12Parser, X12ParserConfig
from parsers.x12.tokenizer import Delimiters, Tokenizer

__all__ = ["Delimiters", "FunctionalGroup", "Interchange", "InterchangeReport", "Tokenizer",
           "TransactionSet", "X12Parser", "X12ParserConfig"]
