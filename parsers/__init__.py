"""Parsers: bytes in, a stream of :class:`parsers.base.Message` out. One module per format."""
