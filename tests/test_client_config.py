"""
The keys that get clients to the live node (issue 7): virtual_ip and
interface (the floating IP), on_live, on_backup, on_fault and hook_timeout
(the notify hooks). Each may be set in [failover] or in a server's section,
and the server's own wins.
"""

from twisted.trial import unittest

from iwayfailover.config import DEFAULT_HOOK_TIMEOUT, ConfigError, parse_config

PATH = "/srv/share/iway/failover.ini"


def config(failover="", serv_a="", serv_b=""):
    return parse_config(
        f"[failover]\n{failover}\n"
        f"[server:serv_a]\nbackup_location = iam2:1200\nheartbeat_port = 1200\nthreshold = 3\n{serv_a}\n"
        f"[server:serv_b]\nbackup_location = iam1:1200\nheartbeat_port = 1200\nthreshold = 3\n{serv_b}\n",
        PATH,
    )


class ClientSettingsTests(unittest.TestCase):
    def error(self, **sections):
        with self.assertRaises(ConfigError) as caught:
            config(**sections)
        return caught.exception

    def test_failover_keys_apply_to_every_server(self):
        """virtual_ip and interface in [failover] are every server's."""
        shared = config(failover="virtual_ip = 10.0.0.100/24\ninterface = eth0")
        for name in ("serv_a", "serv_b"):
            self.assertEqual(shared.client_settings(name).virtual_ip, "10.0.0.100/24")
            self.assertEqual(shared.client_settings(name).interface, "eth0")

    def test_the_servers_own_key_wins(self):
        """A key in a server's section wins over the same key in [failover], for that server only."""
        shared = config(
            failover="virtual_ip = 10.0.0.100/24\ninterface = eth0\non_live = /bin/true\nhook_timeout = 4",
            serv_b="interface = bond0\non_live = /usr/local/bin/notify 'live now'",
        )
        a, b = shared.client_settings("serv_a"), shared.client_settings("serv_b")
        self.assertEqual((a.interface, a.on_live), ("eth0", ("/bin/true",)))
        self.assertEqual((b.interface, b.on_live), ("bond0", ("/usr/local/bin/notify", "live now")))
        self.assertEqual((a.virtual_ip, b.virtual_ip), ("10.0.0.100/24", "10.0.0.100/24"))
        self.assertEqual((a.timeout, b.timeout), (4.0, 4.0))

    def test_nothing_set_means_no_floating_ip_no_hooks_and_the_default_hook_timeout(self):
        """Without the keys a server has no floating IP and no hooks."""
        settings = config().client_settings("serv_a")
        self.assertIsNone(settings.virtual_ip)
        self.assertIsNone(settings.on_fault)
        self.assertEqual(settings.timeout, DEFAULT_HOOK_TIMEOUT)

    def test_ipv6_virtual_ip(self):
        """An IPv6 address with its prefix is a floating IP too."""
        shared = config(serv_a="virtual_ip = 2001:db8::100/64\ninterface = eth0")
        self.assertEqual(shared.client_settings("serv_a").virtual_ip, "2001:db8::100/64")

    def test_virtual_ip_without_a_prefix_is_refused(self):
        """The prefix length is needed to put the address on the interface: its absence is an error naming the key."""
        e = self.error(serv_a="virtual_ip = 10.0.0.100\ninterface = eth0")
        self.assertEqual((e.section, e.key), ("server:serv_a", "virtual_ip"))
        self.assertIn("prefix length is missing", str(e))
        self.assertIn(PATH, str(e))

    def test_bad_virtual_ips_are_refused(self):
        """Not an address, loopback, link-local, or a network's own address: each refused with the value shown."""
        for bad, problem in [
            ("300.1.1.1/24", "not an address"), ("127.0.0.5/8", "loopback"), ("fe80::1/64", "link-local"),
            ("10.0.0.0/24", "network's own"), ("10.0.0.255/24", "broadcast"), ("224.0.0.5/24", "multicast"),
        ]:
            e = self.error(failover=f"virtual_ip = {bad}\ninterface = eth0")
            self.assertEqual((e.section, e.key, e.value), ("failover", "virtual_ip", bad))
            self.assertIn(problem, str(e))

    def test_bad_interface_names_are_refused(self):
        """An interface name with a slash, a space, or too long is refused."""
        for bad in ("eth/0", "eth 0", "a" * 16, ".."):
            e = self.error(failover=f"interface = {bad}\nvirtual_ip = 10.0.0.100/24")
            self.assertEqual((e.section, e.key), ("failover", "interface"))
            self.assertIn("interface name", str(e))

    def test_virtual_ip_needs_an_interface(self):
        """A floating IP with nowhere to put it is an error naming the server and the missing key."""
        e = self.error(serv_b="virtual_ip = 10.0.0.100/24")
        self.assertEqual((e.section, e.key), ("server:serv_b", "interface"))
        self.assertIn("virtual_ip is set", str(e))

    def test_interface_alone_is_an_error_too(self):
        """An interface without a virtual_ip names the missing virtual_ip."""
        e = self.error(serv_a="interface = eth0")
        self.assertEqual(e.key, "virtual_ip")

    def test_hook_commands_are_split_like_a_shell_would(self):
        """Quotes group words; an unclosed quote or an empty command is an error naming the hook's key."""
        shared = config(failover="""on_fault = /usr/bin/logger -t iway "a fault: see the log" """)
        self.assertEqual(shared.client_settings("serv_a").on_fault, ("/usr/bin/logger", "-t", "iway", "a fault: see the log"))
        e = self.error(serv_a="on_backup = /bin/notify 'unclosed")
        self.assertEqual((e.section, e.key), ("server:serv_a", "on_backup"))
        self.assertIn("cannot split", str(e))
        e = self.error(failover="on_live = ''")
        self.assertEqual(e.key, "on_live")
        self.assertIn("empty", str(e))

    def test_hook_timeout_must_be_positive(self):
        """hook_timeout is a number of seconds greater than 0."""
        e = self.error(serv_a="hook_timeout = 0")
        self.assertEqual((e.section, e.key), ("server:serv_a", "hook_timeout"))

    def test_an_unknown_key_still_lists_the_new_keys(self):
        """A misspelt key is refused, and the allowed list includes the client keys."""
        e = self.error(serv_a="virtual_ipp = 10.0.0.100/24")
        self.assertEqual(e.key, "virtual_ipp")
        self.assertIn("virtual_ip", e.allowed)
        self.assertIn("on_fault", e.allowed)
