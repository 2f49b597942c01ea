"""Trading-partner profiles: who a partner is in the envelopes, and what it wants back.

A profile (``partners:`` in ``bridge.yaml``, :class:`PartnerConfig`) names the
partner's ISA qualifier and id (ISA05/ISA06 when it sends, ISA07/ISA08 when we
send), its GS application id, ours, the X12 version, the delimiters to write
with, whether to ask for a TA1 (ISA14) and which acknowledgments it gets back,
and the destination ("return channel") that delivers files to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mappings.cxml_outbound import CxmlPartnerConfig
from parsers.x12.tokenizer import Delimiters

__all__ = ["PartnerConfig"]


class PartnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    isa_qualifier: str = Field("ZZ", min_length=2, max_length=2)
    isa_id: str = Field(min_length=1, max_length=15)
    gs_id: str | None = Field(None, max_length=15)
    our_isa_qualifier: str = Field("ZZ", min_length=2, max_length=2)
    our_isa_id: str = Field(min_length=1, max_length=15)
    our_gs_id: str | None = Field(None, max_length=15)
    version: Literal["00501", "00401"] = "00501"
    usage: Literal["P", "T"] = "P"
    #: ask the partner for a TA1 on interchanges we send (ISA14)
    request_ta1: bool = False
    #: send the partner 999 (5010) / 997 (4010) functional acknowledgments
    functional_acks: bool = True
    #: TA1 back: when the partner's ISA14 asks, on every interchange, only on errors, never
    ta1: Literal["requested", "always", "on_error", "never"] = "requested"
    #: the destination that delivers files (acks, 850s) to this partner
    return_channel: str | None = None
    #: the ERP vendor code this partner is, so a PurchaseOrder finds its profile
    vendor: str | None = None
    #: how a PurchaseOrder goes to this vendor: an X12 850, or a cXML 1.2 OrderRequest (needs ``cxml``)
    po_format: Literal["x12_850", "cxml"] = "x12_850"
    #: cXML credentials (the shared secret from an environment variable) and destination
    cxml: CxmlPartnerConfig | None = None
    element_separator: str = Field("*", min_length=1, max_length=1)
    component_separator: str = Field(":", min_length=1, max_length=1)
    repetition_separator: str = Field("^", min_length=1, max_length=1)
    segment_terminator: str = Field("~", min_length=1, max_length=1)
    #: a line break after each terminator (many partners' files are read by people too)
    line_break: bool = False

    @model_validator(mode="after")
    def _check(self) -> PartnerConfig:
        if self.po_format == "cxml" and self.cxml is None:
            raise ValueError("po_format cxml needs a cxml block (identities, shared_secret_env, destination)")
        if not self.delimiters.usable():
            raise ValueError("the four delimiters must differ and be neither letters, digits nor spaces")
        chars = [self.element_separator, self.component_separator, self.repetition_separator,
                 self.segment_terminator]
        for value in (self.isa_id, self.our_isa_id, self.gs_id or "", self.our_gs_id or ""):
            if any(c in value for c in chars):
                raise ValueError("an id contains a delimiter character")
        return self

    @property
    def delimiters(self) -> Delimiters:
        return Delimiters(self.element_separator, self.component_separator, self.repetition_separator,
                          self.segment_terminator)

    @property
    def their_gs(self) -> str:
        return self.gs_id or self.isa_id

    @property
    def our_gs(self) -> str:
        return self.our_gs_id or self.our_isa_id
