"""iwayfailover: hot-backup failover for servers built on Twisted."""

__version__ = "0.3.0"
