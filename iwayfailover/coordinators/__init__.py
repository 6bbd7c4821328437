"""
Coordinators: where a group's live role is decided. C{etcdclient} talks to
etcd v3 through its JSON gateway, for the etcd coordinator.
"""
