"""The node's signing key set: read it from EDGE360_AUTH_KEYS or EDGE360_AUTH_KEYS_FILE, and
decide whether a key set read at start-up or on SIGHUP may be used.

With `auth.required` every content request needs a token that one of these keys verifies, so an
empty key set would answer every viewer 403. An empty set is therefore refused while
`auth.required` is on: at start-up it is one line and exit 2, on a reload one log line and the
keys in use stay. A set that does not parse is refused the same way whatever `auth.required` says
(a reload must never swap a working key set for a half-read file). Without `auth.required` an
empty set is allowed: tokens are not checked then.

Every message names the setting and the file, never a secret (tokens.parse_keys reports entries
by position).
"""

from __future__ import annotations

from edge360.config.schema import Config
from edge360.core.errors import ConfigError
from edge360.security.tokens import Key, parse_keys

#: a keys file larger than this is not a key list (a few hundred keys fit in a few KiB)
MAX_KEYS_FILE = 1024 * 1024


def _source(config: Config) -> str:
    if config.auth.keys_file:
        return f"EDGE360_AUTH_KEYS_FILE {config.auth.keys_file!r}"
    return "EDGE360_AUTH_KEYS"


def _text(config: Config) -> str:
    if not config.auth.keys_file:
        return config.auth.keys
    return read_key_file("auth.keys_file", config.auth.keys_file)


def read_key_file(setting: str, path: str) -> str:
    """The text of a keys file (bounded, UTF-8); ConfigError naming `setting` when it cannot be
    used."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_KEYS_FILE + 1)
    except OSError as e:
        raise ConfigError(setting, f"cannot read {path!r}: {e.strerror or e}") from None
    if len(raw) > MAX_KEYS_FILE:
        raise ConfigError(setting, f"{path!r} is larger than {MAX_KEYS_FILE} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path!r} is not UTF-8 text") from None


def read_keys(config: Config) -> tuple[Key, ...]:
    """The key set `config` names; ConfigError when it does not parse, or when it is empty while
    auth.required is on."""
    text = _text(config)
    keys = parse_keys(text) if text.strip() else ()
    if config.auth.required and not keys:
        raise ConfigError("auth.keys", f"auth.required is on but {_source(config)} holds no keys")
    return keys


def reload_keys(config: Config, current: tuple[Key, ...]) -> tuple[Key, ...]:
    """The key set to use after a SIGHUP: the new one, or ConfigError (whose message says that
    the `current` keys stay in use) when the new one is refused."""
    try:
        return read_keys(config)
    except ConfigError as e:
        raise ConfigError(e.key, f"{e.problem}; still using the {len(current)} keys loaded "
                                 "before") from None
