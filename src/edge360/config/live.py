"""What a SIGHUP may change: the config resolved again from the sources the process started with,
merged into the running one key by key (LIVE_KEYS apply at once; any other difference is named
and left as it was until a restart). Pure: no clock, no I/O beyond what `config.load` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge360.config.schema import SECTIONS, Config, load


def split_listen(address: str) -> tuple[str, int]:
    """(host, port) of a listen_address value."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


#: keys a SIGHUP applies to a running node; every other key needs a restart
LIVE_KEYS = frozenset({
    ("edge", "upstreams"), ("server", "trusted_proxies"), ("limits", "rate_per_ip"),
    ("limits", "rate_burst"), ("limits", "max_connections"), ("limits", "header_timeout"),
    ("limits", "send_timeout"), ("sessions", "per_ip_per_minute"), ("sessions", "capacity"),
    ("sessions", "queue_hold"), ("server", "egress_limit"),
})


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where a node's config came from (the --config file, the environment the process started
    with, the flags), so a SIGHUP can resolve it again. Picklable: workers get it too."""

    toml_path: str | None
    env: Mapping[str, str]
    flags: Mapping[str, Any]

    def load(self) -> Config:
        return load(self.toml_path, self.env, self.flags, require_media=True)


def merge_live(running: Config, fresh: Config) -> tuple[Config, list[str], list[str]]:
    """`running` with the LIVE_KEYS of `fresh` applied; also the dotted names of the live keys
    that changed and of the keys that differ but need a restart (left as they were)."""
    merged = running
    changed: list[str] = []
    frozen: list[str] = []
    for section in SECTIONS:
        old, new = getattr(running, section), getattr(fresh, section)
        for f in dataclasses.fields(old):
            if getattr(old, f.name) == getattr(new, f.name):
                continue
            if (section, f.name) in LIVE_KEYS:
                merged = merged.replace(section, **{f.name: getattr(new, f.name)})
                changed.append(f"{section}.{f.name}")
            else:
                frozen.append(f"{section}.{f.name}")
    return merged, changed, frozen
