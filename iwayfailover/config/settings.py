"""
The immutable settings a parsed configuration holds: one class for each
kind of section, with a field for each of its keys in
L{iwayfailover.config.schema.KEYS} (added by L{settings_fields}) besides
the fields declared here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from iwayfailover import tls
from iwayfailover.config.schema import CLIENT, key_of, keys_of, settings_fields
from iwayfailover.config.values import ConfigError, client_endpoint_string, server_endpoint_string

HOOK_KEYS = ("on_live", "on_backup", "on_fault")

DEFAULT_HOOK_TIMEOUT: float = key_of("failover", "hook_timeout").default
"""Seconds a notify hook may run before it is killed."""


@settings_fields(keys_of("failover", CLIENT), defaults=False)
class ClientSettings:
    """
    What gets clients to the live node: the floating IP it holds while live,
    and the commands it runs when its role changes. Each may be set in
    [failover] or in a server's section; None means not set there.
    """

    def over(self, fallback: "ClientSettings") -> "ClientSettings":
        """These settings, with C{fallback}'s wherever these have none."""
        return ClientSettings(**{
            name: getattr(self, name) if getattr(self, name) is not None else getattr(fallback, name)
            for name in self.__dataclass_fields__
        })

    @property
    def timeout(self) -> float:
        return self.hook_timeout if self.hook_timeout is not None else DEFAULT_HOOK_TIMEOUT

    def hook(self, name: str) -> Optional[Tuple[str, ...]]:
        return getattr(self, name)


@settings_fields(keys_of("failover", ""))
class FailoverSettings:
    """The [failover] section: its keys, and the floating IP and notify hooks set there."""

    client: ClientSettings = field(default_factory=ClientSettings)
    etcd_password: Optional[str] = field(default=None, repr=False)
    """With coordinator = etcd and etcd_user set: the password, the first line
    of etcd_password_file (read when the file was parsed); never shown."""

    @property
    def group(self) -> bool:
        """Is the live role held on etcd (coordinator = etcd), for a group of any size?"""
        return self.coordinator == "etcd"

    @property
    def etcd_tls(self) -> bool:
        """Are the etcd endpoints https:// (TLS, with etcd_cacert or the system's trusted CAs)?"""
        return bool(self.etcd_endpoints) and self.etcd_endpoints[0].startswith("https:")


@settings_fields(keys_of("server", ""))
class ServerSettings:
    """One [server:NAME] section: its keys, and the floating IP and notify hooks set there."""

    name: str
    folder: str = field(default="", repr=False, compare=False)
    """The configuration file's folder: relative TLS file paths are relative to it."""
    client: ClientSettings = field(default_factory=ClientSettings)

    @property
    def backup_endpoint(self) -> str:
        """The Location of Backup as a client endpoint string (TLS file paths made absolute)."""
        return tls.resolve_files(client_endpoint_string(self.backup_location), self.folder)

    @property
    def heartbeat_endpoint(self) -> str:
        """The Heartbeat Port as a server endpoint string (TLS file paths made absolute)."""
        return tls.resolve_files(server_endpoint_string(self.heartbeat_port), self.folder)


@settings_fields(keys_of("listener"))
class ListenerSettings:
    """
    One [listener:NAME] section, a channel: a twistd plugin (C{plugin} and
    its C{args}), or a program (C{command}, with how it is restarted and
    stopped: L{iwayfailover.process}).
    """

    name: str
    plugin: str
    args: Tuple[str, ...]

    def runs_on(self, server: str) -> bool:
        return self.servers is None or server in self.servers

    @property
    def command_line(self) -> str:
        if self.command:
            return shlex.join(self.command)
        return shlex.join((self.plugin,) + self.args)


@dataclass(frozen=True)
class SharedConfig:
    path: str
    digest: str
    failover: FailoverSettings
    servers: Mapping[str, ServerSettings] = field(default_factory=dict)
    listeners: Mapping[str, ListenerSettings] = field(default_factory=dict)
    keys: Optional[object] = field(default=None, repr=False, compare=False)
    """The heartbeat keys (an L{iwayfailover.auth.KeyRing}), once read by
    L{iwayfailover.tap.load_checked_config}; never shown."""
    text: str = field(default="", repr=False, compare=False)
    """The text it was parsed from (its UTF-8 bytes are the file's, byte for
    byte): what the node keeps as its local copy (L{iwayfailover.config.lastgood})."""

    @property
    def fingerprint(self) -> tuple:
        """What a reload compares: the file's digest and the ids of its keys."""
        return (self.digest, getattr(self.keys, "key_ids", None))

    def server(self, name: str) -> ServerSettings:
        """
        This node's section.

        @raise ConfigError: there is no C{[server:NAME]} section; the message
            lists the sections there are.
        """
        try:
            return self.servers[name]
        except KeyError:
            there = ", ".join(f"[server:{n}]" for n in sorted(self.servers)) or "none"
            raise ConfigError(
                self.path,
                f"server:{name}",
                problem=f"no section for server {name!r}; the servers defined are: {there}",
            ) from None

    def listeners_for(self, server: str) -> Mapping[str, ListenerSettings]:
        return {n: spec for n, spec in self.listeners.items() if spec.runs_on(server)}

    def client_settings(self, server: str) -> ClientSettings:
        """The floating IP and notify hooks of C{server}: its own section's keys win over [failover]'s."""
        return self.server(server).client.over(self.failover.client)
