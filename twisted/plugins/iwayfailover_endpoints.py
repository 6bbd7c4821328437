"""
Endpoint plugin for iwayfailover: C{clientFromString(reactor, "failover:...")}.

Kept small on purpose, like the twistd plugin beside it: Twisted imports
every plugin module when it scans for plugins. The endpoint itself lives in
``iwayfailover.client``, imported only when a failover string is parsed.
"""

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class FailoverEndpointParser:
    """Parses C{failover:HOST\\:PORT:HOST\\:PORT[:timeout=SECONDS]}."""

    prefix = "failover"

    def parseStreamClient(self, reactor, *args, **kwargs):
        from iwayfailover.client import parse_failover

        return parse_failover(reactor, *args, **kwargs)


failover = FailoverEndpointParser()
