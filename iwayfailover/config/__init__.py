"""
The shared configuration: one INI file, read by every node, parsed into
immutable settings.

    - L{schema}: the one table of keys (section, kind of value, default,
      meaning, how the console and a reload treat it);
    - L{values}: the kinds of value, their checks, and L{ConfigError};
    - L{settings}: the settings a parsed file holds (L{SharedConfig});
    - L{parse}: the file's structure and the rules between keys;
    - L{reference}: the key reference docs/configuration.md, made from the table;
    - L{lastgood}: the copy of the last configuration applied, on local disk.
"""

from iwayfailover.config.parse import parse_config, read_config
from iwayfailover.config.schema import KEYS, Key, changed_keys
from iwayfailover.config.settings import (
    DEFAULT_HOOK_TIMEOUT, HOOK_KEYS, ClientSettings, FailoverSettings, ListenerSettings, ServerSettings, SharedConfig,
)
from iwayfailover.config.values import (
    FALSE_WORDS, NAME_ALLOWED, NAME_PATTERN, TRUE_WORDS, ConfigError, ConfigUnreadable, backup_host,
    client_endpoint_string, console_endpoint_string, endpoint_interface, endpoint_port, server_endpoint_string,
)

__all__ = [
    "KEYS", "DEFAULT_HOOK_TIMEOUT", "FALSE_WORDS", "HOOK_KEYS", "NAME_ALLOWED", "NAME_PATTERN", "TRUE_WORDS",
    "ClientSettings", "ConfigError", "ConfigUnreadable", "FailoverSettings", "Key", "ListenerSettings",
    "ServerSettings", "SharedConfig",
    "backup_host", "changed_keys", "client_endpoint_string", "console_endpoint_string", "endpoint_interface",
    "endpoint_port", "parse_config", "read_config", "server_endpoint_string",
]
