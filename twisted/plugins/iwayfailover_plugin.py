"""
twistd plugin for iwayfailover: names where the options and the service live.

Kept to one statement on purpose: twistd imports every plugin module for
``twistd --help``; an import error here would be logged and the plugin would
silently vanish. Everything heavy lives in ``iwayfailover.tap``.
"""

from twisted.application.service import ServiceMaker

iwayfailover = ServiceMaker(
    "iwayfailover",
    "iwayfailover.tap",
    "Hot-backup failover node: live, or backup with --backup",
    "iway-failover",
)
