"""RFC 8941 Structured Field Values, as far as targeted cache fields need them: a Dictionary (the
syntax RFC 9213 §2.1 gives targeted fields, CDN-Cache-Control and our Edge360-Cache-Control)
parsed into its members, whose values are Integers, Decimals, Strings, Tokens, Byte Sequences,
Booleans or Inner Lists.

Parsing is strict (RFC 8941 §4.2): a field that does not parse is not used in part; the caller
learns it is invalid (None) and ignores the whole field.
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias

_SF_KEY: Final = re.compile(r"[a-z*][a-z0-9_.*-]*")
_SF_INT: Final = re.compile(r"-?[0-9]{1,15}(?![0-9.])")
_SF_DEC: Final = re.compile(r"-?[0-9]{1,12}\.[0-9]{1,3}(?![0-9.])")
_SF_STRING: Final = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_SF_TOKEN: Final = re.compile(r"[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*")
_SF_BYTES: Final = re.compile(r":[A-Za-z0-9+/=]*:")
_SF_BOOL: Final = re.compile(r"\?[01]")

SfValue: TypeAlias = int | float | str | bool | bytes | list["SfValue"]


class _SfError(ValueError):
    """The field is not a valid Structured Field; RFC 9213 §2.1 says ignore it."""


class _SfParser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def _ows(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def _re(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.s, self.i)
        if m is not None:
            self.i = m.end()
        return m

    def bare_item(self) -> SfValue:
        if m := self._re(_SF_DEC):
            return float(m.group(0))
        if m := self._re(_SF_INT):
            return int(m.group(0))
        if m := self._re(_SF_STRING):
            return re.sub(r"\\(.)", r"\1", m.group(1))
        if m := self._re(_SF_BOOL):
            return m.group(0) == "?1"
        if m := self._re(_SF_BYTES):
            return m.group(0).encode()
        if m := self._re(_SF_TOKEN):
            return m.group(0)
        raise _SfError(f"bad item at {self.i}")

    def parameters(self) -> None:
        # Parameters carry no meaning for cache directives (RFC 9213 §2.1); parse and drop them.
        while self.i < len(self.s) and self.s[self.i] == ";":
            self.i += 1
            while self.i < len(self.s) and self.s[self.i] == " ":
                self.i += 1
            if not self._re(_SF_KEY):
                raise _SfError("bad parameter key")
            if self.i < len(self.s) and self.s[self.i] == "=":
                self.i += 1
                self.bare_item()

    def member_value(self) -> SfValue:
        if self.i < len(self.s) and self.s[self.i] == "(":
            self.i += 1
            items: list[SfValue] = []
            # Every pass consumes an item or the closing parenthesis, or raises.
            while True:
                while self.i < len(self.s) and self.s[self.i] == " ":
                    self.i += 1
                if self.i < len(self.s) and self.s[self.i] == ")":
                    self.i += 1
                    break
                items.append(self.bare_item())
                self.parameters()
                if self.i < len(self.s) and self.s[self.i] not in " )":
                    raise _SfError("bad inner list")
            self.parameters()
            return items
        item = self.bare_item()
        self.parameters()
        return item

    def dictionary(self) -> list[tuple[str, SfValue]]:
        self.s = self.s.strip(" ")
        out: list[tuple[str, SfValue]] = []
        while self.i < len(self.s):
            key = self._re(_SF_KEY)
            if key is None:
                raise _SfError("bad key")
            value: SfValue = True
            if self.i < len(self.s) and self.s[self.i] == "=":
                self.i += 1
                value = self.member_value()
            else:
                self.parameters()
            out.append((key.group(0), value))
            self._ows()
            if self.i >= len(self.s):
                break
            if self.s[self.i] != ",":
                raise _SfError("expected a comma")
            self.i += 1
            self._ows()
            if self.i >= len(self.s):
                raise _SfError("trailing comma")
        return out


def parse_dictionary(text: str) -> list[tuple[str, SfValue]] | None:
    """The members of a Dictionary field in order, duplicates kept (RFC 8941 §3.2: the caller
    lets the last win); a member without a value is True; parameters are dropped. None when
    `text` is not a valid Dictionary."""
    try:
        return _SfParser(text).dictionary()
    except _SfError:
        return None
