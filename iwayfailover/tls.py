"""
TLS heartbeat links: endpoint strings for them, and the endpoints.

A heartbeat port (server side)::

    ssl:1200:privateKey=node.key:certKey=node.crt[:caCerts=ca.crt][:interface=ADDR]

With C{caCerts} (a PEM file of one or more CA certificates, or a folder of
C{.pem} files) the port is mutual TLS: it accepts only connections that
present a client certificate signed by one of those CAs.

A Location of Backup (client side)::

    tls:HOST:PORT[:trustRoots=ca.crt][:certificate=node.crt:privateKey=node.key]

The backup's certificate is checked against C{trustRoots} (a PEM file or a
folder; the system's CAs when absent) and against HOST with
service_identity (a DNS name or an IP address in its subjectAltName).
C{certificate}/C{privateKey} are this node's client certificate for a
mutual-TLS port. C{ssl:} client strings, which check no host name, are
refused.

Relative paths are relative to the configuration file, like C{secret_file}.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Dict, List, Tuple

from OpenSSL import SSL, crypto
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.endpoints import (
    HostnameEndpoint, SSL4ServerEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, clientFromString, serverFromString,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from zope.interface import implementer

SERVER_FILES = ("privateKey", "certKey", "extraCertChain", "caCerts", "dhParameters")
CLIENT_FILES = ("trustRoots", "certificate", "privateKey")

_SPLIT = re.compile(r"(?<!\\):")


class TLSConfigError(ValueError):
    """A TLS endpoint string that cannot be used; the message says why."""


def split(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    An endpoint string as (kind, positional arguments, keyword arguments),
    with C{\\:} escapes undone.
    """
    kind, _, rest = description.strip().partition(":")
    kind = kind.lower()  # as Twisted's parsers take it: SSL: is ssl:
    args, kwargs = [], {}
    for part in _SPLIT.split(rest) if rest else []:
        key, equals, value = part.partition("=")
        if equals and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            kwargs[key] = value.replace("\\:", ":").replace("\\=", "=")
        else:
            args.append(part.replace("\\:", ":"))
    return kind, args, kwargs


def join(kind: str, args: List[str], kwargs: Dict[str, str]) -> str:
    """The endpoint string of L{split}'s parts, escaped again."""
    parts = [kind] + [a.replace(":", "\\:") for a in args]
    parts += [f"{k}={v.replace(':', chr(92) + ':')}" for k, v in kwargs.items()]
    return ":".join(parts)


def is_tls(description: str) -> bool:
    return description.strip().partition(":")[0].lower() in ("ssl", "tls")


def resolve_files(description: str, folder: str) -> str:
    """
    C{description} with the relative file paths of a TLS endpoint made
    absolute against C{folder} (other strings come back as they are).
    """
    kind, args, kwargs = split(description)
    names = {"ssl": SERVER_FILES + CLIENT_FILES, "tls": CLIENT_FILES}.get(kind)
    if names is None:
        return description
    changed = False
    for name in names:
        if name in kwargs and kwargs[name] and not os.path.isabs(kwargs[name]):
            kwargs[name] = os.path.join(folder, os.path.expanduser(kwargs[name]))
            changed = True
    return join(kind, args, kwargs) if changed else description


def _read(path: str, what: str) -> bytes:
    try:
        return FilePath(path).getContent()
    except OSError as e:
        raise TLSConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_certificates(path: str, what: str) -> List[ssl.Certificate]:
    """Every certificate in a PEM file, or in the C{.pem} files of a folder."""
    files = [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(".pem"))
    certificates = []
    for name in files:
        data = _read(name, what)
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
        for block in blocks:
            try:
                certificates.append(ssl.Certificate.loadPEM(block))
            except Exception as e:
                raise TLSConfigError(f"{what} {name} holds a certificate that cannot be read ({e})") from None
    if not certificates:
        raise TLSConfigError(f"no PEM certificate in {what} {path}")
    return certificates


def private_certificate(cert_path: str, key_path: str, what: str) -> ssl.PrivateCertificate:
    certificate = load_certificates(cert_path, f"{what} certificate")[0]
    try:
        key = ssl.KeyPair.load(_read(key_path, f"{what} private key"), crypto.FILETYPE_PEM)
    except TLSConfigError:
        raise
    except Exception as e:
        raise TLSConfigError(f"{what} private key {key_path} cannot be read as PEM ({e})") from None
    try:
        return ssl.PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
    except Exception as e:
        raise TLSConfigError(f"{what} private key {key_path} does not match its certificate {cert_path} ({e})") from None


def server_endpoint(reactor, description: str):
    """
    The server endpoint of a heartbeat port string: C{ssl:} built here (TLS
    1.2 at least; mutual with C{caCerts}), Twisted's own parser for
    everything else.

    @raise TLSConfigError: or what L{serverFromString} raises.
    """
    kind, args, kwargs = split(description)
    if kind != "ssl":
        return serverFromString(reactor, description)
    unknown = set(kwargs) - {"port", "interface", "backlog", "privateKey", "certKey", "extraCertChain", "caCerts"}
    if unknown:
        raise TLSConfigError(
            f"TLS heartbeat ports take no {', '.join(sorted(unknown))}"
            " (allowed: port, interface, backlog, privateKey, certKey, extraCertChain, caCerts; TLS 1.2 or newer is always required)"
        )
    if "caCerts" in kwargs and not kwargs["caCerts"]:
        raise TLSConfigError("caCerts is empty: name a PEM file or folder of CA certificates, or leave caCerts out")
    port = kwargs.get("port") or (args[0] if args else None)
    if port is None or not port.isdigit():
        raise TLSConfigError("no port number")
    private_key = kwargs.get("privateKey", "server.pem")
    mine = private_certificate(kwargs.get("certKey") or private_key, private_key, "heartbeat port's")
    chain = [c.original for c in load_certificates(kwargs["extraCertChain"], "extraCertChain")] if "extraCertChain" in kwargs else []
    verify = {}
    if "caCerts" in kwargs:
        authorities = load_certificates(kwargs["caCerts"], "caCerts")
        verify = dict(verify=True, requireCertificate=True, caCerts=[c.original for c in authorities])
    options = ssl.CertificateOptions(
        privateKey=mine.privateKey.original, certificate=mine.original, extraCertChain=chain,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **verify,
    )
    return SSL4ServerEndpoint(reactor, int(port), options, backlog=int(kwargs.get("backlog", 50)), interface=kwargs.get("interface", ""))


def client_endpoint(reactor, description: str, timeout: float = 30.0):
    """
    The client endpoint of a Location of Backup string: C{tls:} built here
    (host name checked, trust roots from a file or folder, optional client
    certificate), C{ssl:} refused, everything else by Twisted's parser.

    @param timeout: how long a C{tls:} endpoint tries to connect, unless
        its string says; the kinds Twisted parses take the whole seconds of
        their own C{timeout=} (30 by default), so a caller that needs less
        gives up on the connecting Deferred itself (C{addTimeout}).
    @raise TLSConfigError: or what L{clientFromString} raises.
    """
    kind, args, kwargs = split(description)
    if kind == "ssl":
        raise TLSConfigError(
            "ssl: client endpoints do not check the backup's host name; use tls:HOST:PORT:trustRoots=CA.pem"
        )
    if kind not in ("tls", "tcp", "tcp6", "unix"):
        raise TLSConfigError(f"not a client endpoint a Location of Backup can use: {kind}: (allowed kinds: tcp, tcp6, unix, tls)")
    if kind != "tls":
        return clientFromString(reactor, description)
    unknown = set(kwargs) - {"host", "port", "timeout", "trustRoots", "certificate", "privateKey"}
    if unknown:
        raise TLSConfigError(f"tls: endpoints here take no {', '.join(sorted(unknown))}")
    host = kwargs.get("host") or (args[0] if args else None)
    port = kwargs.get("port") or (args[1] if len(args) > 1 else None)
    if not host or port is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise TLSConfigError("needs a host and a port: tls:HOST:PORT")
    trust = None
    if "trustRoots" in kwargs and not kwargs["trustRoots"]:
        raise TLSConfigError("trustRoots is empty: name a PEM file or folder of CA certificates, or leave it out for the system's")
    if kwargs.get("trustRoots"):
        trust = ssl.trustRootFromCertificates(load_certificates(kwargs["trustRoots"], "trustRoots"))
    client_certificate = None
    if kwargs.get("certificate"):
        client_certificate = private_certificate(
            kwargs["certificate"], kwargs.get("privateKey") or kwargs["certificate"], "client"
        )
    elif kwargs.get("privateKey"):
        raise TLSConfigError("privateKey without certificate")
    creator = ssl.optionsForClientTLS(
        host, trustRoot=trust, clientCertificate=client_certificate,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )
    seconds = float(kwargs.get("timeout", timeout))
    return TLSClientEndpoint(reactor, creator, _tcp(reactor, host, int(port), seconds), host, int(port))


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """
    TLS over a TCP client endpoint, as Twisted's C{wrapClientTLS} makes it,
    with what it was built from kept where callers and tests can read it.
    The TLS layer's timer (it gathers small writes until the next turn of
    the reactor) runs on C{reactor}, not on the global reactor.

    @ivar host: the host name or address dialled, checked against the certificate.
    @ivar port: the port dialled.
    @ivar creator: the client connection creator of L{ssl.optionsForClientTLS}
        (host name check, trust roots, client certificate, TLS 1.2 at least).
    @ivar endpoint: the TCP endpoint under TLS: L{TCP4ClientEndpoint} or
        L{TCP6ClientEndpoint} for an address, L{HostnameEndpoint} for a name.
    """

    def __init__(self, reactor, creator, endpoint, host: str, port: int):
        self.reactor = reactor
        self.creator = creator
        self.endpoint = endpoint
        self.host = host
        self.port = port

    def connect(self, factory):
        """Connect C{factory}'s protocol over TLS; the Deferred fires with that protocol once TCP is up."""
        wrapper = TLSMemoryBIOFactory(self.creator, True, factory, clock=self.reactor)
        return self.endpoint.connect(wrapper).addCallback(lambda protocol: protocol.wrappedProtocol)


@implementer(IStreamClientEndpoint)
class FreshClientEndpoint:
    """
    A client endpoint string made into an endpoint at each connect, so a
    TLS file that is briefly unreadable (a share, a certificate being
    renewed) fails that one try, which the caller retries, and a renewed
    certificate is used from the next connection on.
    """

    def __init__(self, reactor, description: str, timeout: float = 30.0):
        self.reactor = reactor
        self.description = description
        self.timeout = timeout

    def connect(self, factory):
        try:
            endpoint = client_endpoint(self.reactor, self.description, self.timeout)
        except Exception:
            return defer.fail()
        return endpoint.connect(factory)


def connector(reactor, description: str, timeout: float = 30.0):
    """The endpoint to dial a Location of Backup with: L{FreshClientEndpoint} for C{tls:}."""
    if is_tls(description):
        return FreshClientEndpoint(reactor, description, timeout)
    return client_endpoint(reactor, description, timeout)


def _tcp(reactor, host, port, timeout):
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    endpoint = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
    return endpoint(reactor, host, port, timeout=timeout)


def client_port(description: str):
    """The port a C{tls:} client string dials, if it names one."""
    kind, args, kwargs = split(description)
    port = kwargs.get("port") or (args[1] if kind == "tls" and len(args) > 1 else None)
    return int(port) if port and port.isdigit() else None


def is_failure(reason) -> bool:
    """Did a connection end because TLS refused it: a handshake error, or a certificate not for its host name?"""
    return reason is not None and (
        reason.check(SSL.Error) is not None or type(reason.value).__name__ in ("VerificationError", "CertificateError")
    )


def describe_failure(failure) -> str:
    """Words for why a TLS connection failed (see L{is_failure}): a certificate problem, a host name mismatch."""
    value = failure.value
    if failure.check(SSL.Error):
        reasons = []
        for entry in value.args[0] if value.args and isinstance(value.args[0], list) else []:
            if isinstance(entry, tuple) and entry:
                reasons.append(str(entry[-1]))
        return "TLS handshake failed: " + ("; ".join(r for r in reasons if r) or str(value))
    name = type(value).__name__
    if name in ("VerificationError", "CertificateError"):
        return f"TLS: the certificate does not match the host name ({value})"
    return f"TLS: {value}"
