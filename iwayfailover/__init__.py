"""iwayfailover: hot-backup failover for servers built on Twisted."""

__version__ = "0.5.0.dev0"
