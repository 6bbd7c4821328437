"""
The shared configuration: INI text in, immutable settings out, and for every
mistake a L{ConfigError} that names the file, the section and the key.
"""

import os
import shutil

from twisted.trial import unittest

from iwayfailover.config import (
    ConfigError,
    FailoverSettings,
    ListenerSettings,
    backup_host,
    client_endpoint_string,
    parse_config,
    read_config,
    server_endpoint_string,
)

PATH = "/srv/share/iway/failover.ini"

SERVER_A = """\
[server:serv_a]
backup_location = iam2:1200
heartbeat_port = 1200
threshold = 3
"""

SERVER_B = """\
[server:serv_b]
backup_location = iam1:1200
heartbeat_port = 1200
threshold = 3
"""


def server_section(name="serv_a", **keys):
    """
    A C{[server:NAME]} section with valid values for the three required keys;
    C{keys} replaces them (a value of C{None} leaves the key out) or adds more.
    """
    values = {"backup_location": "iam2:1200", "heartbeat_port": "1200", "threshold": "3"}
    values.update(keys)
    lines = [f"[server:{name}]"]
    lines += [f"{key} = {value}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def _remove_temporary(folder):
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.removedirs(os.path.dirname(folder))
    except OSError:
        pass  # not empty: another test's folders are still there


class ConfigErrorAssertions:
    """Checks that an error tells the user where the mistake is."""

    def temporary_path(self):
        """
        An absolute path from C{self.mktemp()}, removed after the test with the
        folders mktemp made for it (run from tests/, they would stay there).
        """
        path = self.mktemp()
        folder = os.path.dirname(path)
        self.addCleanup(_remove_temporary, folder)
        return os.path.abspath(path)

    def assertRefused(self, text, section, key=None, path=PATH):
        """
        C{parse_config(text, path)} raises a L{ConfigError} that names
        C{path}, C{section} and C{key}, as attributes and in its message.
        """
        error = self.assertRaises(ConfigError, parse_config, text, path)
        self.assertErrorNames(error, section, key, path)
        return error

    def assertErrorNames(self, error, section, key=None, path=PATH):
        message = str(error)
        self.assertEqual(error.path, path)
        self.assertIn(path, message)
        self.assertEqual(error.section, section)
        if section is not None:
            self.assertIn(f"[{section}]", message)
        self.assertEqual(error.key, key)
        if key is not None:
            self.assertIn(f"] {key}", message)


class FailoverSectionTests(ConfigErrorAssertions, unittest.TestCase):
    """The [failover] section."""

    def test_defaults_apply_without_a_failover_section(self):
        """With no [failover] section, heartbeats every 1 s, reloads every 5 s, no secret."""
        config = parse_config(SERVER_A, PATH)

        self.assertEqual(config.failover, FailoverSettings(heartbeat_interval=1.0, reload_interval=5.0, secret_file=None))

    def test_defaults_apply_to_keys_left_out(self):
        """A [failover] section that sets one key keeps the defaults of the others."""
        config = parse_config("[failover]\nreload_interval = 7\n" + SERVER_A, PATH)

        self.assertEqual(config.failover.heartbeat_interval, 1.0)
        self.assertEqual(config.failover.reload_interval, 7.0)
        self.assertIsNone(config.failover.secret_file)

    def test_heartbeat_interval_may_be_fractional(self):
        """heartbeat_interval = 0.25 is a quarter of a second."""
        config = parse_config("[failover]\nheartbeat_interval = 0.25\n" + SERVER_A, PATH)

        self.assertEqual(config.failover.heartbeat_interval, 0.25)

    def test_reload_interval_may_be_fractional(self):
        """reload_interval = 2.5 is two and a half seconds."""
        config = parse_config("[failover]\nreload_interval = 2.5\n" + SERVER_A, PATH)

        self.assertEqual(config.failover.reload_interval, 2.5)

    def test_inline_comments_are_not_part_of_the_value(self):
        """A `; comment` after a value, as in the contract's example, is ignored."""
        config = parse_config("[failover]\nheartbeat_interval = 0.5   ; seconds\n" + SERVER_A, PATH)

        self.assertEqual(config.failover.heartbeat_interval, 0.5)

    def test_unknown_key_is_refused(self):
        """A key [failover] does not know is an error naming it."""
        self.assertRefused("[failover]\nheartbeat = 1\n" + SERVER_A, "failover", "heartbeat")

    def test_keys_are_case_sensitive(self):
        """Heartbeat_Interval is not heartbeat_interval: it is an unknown key."""
        self.assertRefused("[failover]\nHeartbeat_Interval = 1\n" + SERVER_A, "failover", "Heartbeat_Interval")

    def test_unknown_key_error_lists_the_known_keys(self):
        """The error for an unknown key says which keys are allowed."""
        error = self.assertRefused("[failover]\nheartbeat = 1\n" + SERVER_A, "failover", "heartbeat")

        self.assertIn(
            "console_users, coordinator, etcd_cacert, etcd_cert, etcd_endpoints, etcd_key, etcd_password_file,"
            " etcd_prefix, etcd_user, failback, failback_delay, heartbeat_interval, insecure, lock_memory, preferred,"
            " pulses, realtime, reload_interval, secret_file, self_fence, unsaved_epoch, witness",
            str(error),
        )

    def test_heartbeat_interval_not_a_number_is_refused(self):
        """heartbeat_interval = fast is not a number of seconds."""
        error = self.assertRefused("[failover]\nheartbeat_interval = fast\n" + SERVER_A, "failover", "heartbeat_interval")

        self.assertIn("'fast'", str(error))

    def test_heartbeat_interval_zero_is_refused(self):
        """heartbeat_interval = 0 would send heartbeats without pause."""
        self.assertRefused("[failover]\nheartbeat_interval = 0\n" + SERVER_A, "failover", "heartbeat_interval")

    def test_heartbeat_interval_negative_is_refused(self):
        """heartbeat_interval = -1 is refused."""
        self.assertRefused("[failover]\nheartbeat_interval = -1\n" + SERVER_A, "failover", "heartbeat_interval")

    def test_heartbeat_interval_nan_is_refused(self):
        """heartbeat_interval = nan is refused although float() accepts it."""
        self.assertRefused("[failover]\nheartbeat_interval = nan\n" + SERVER_A, "failover", "heartbeat_interval")

    def test_heartbeat_interval_infinite_is_refused(self):
        """heartbeat_interval = inf is refused although float() accepts it."""
        self.assertRefused("[failover]\nheartbeat_interval = inf\n" + SERVER_A, "failover", "heartbeat_interval")

    def test_reload_interval_not_a_number_is_refused(self):
        """reload_interval = often is not a number of seconds."""
        self.assertRefused("[failover]\nreload_interval = often\n" + SERVER_A, "failover", "reload_interval")

    def test_reload_interval_zero_is_refused(self):
        """reload_interval = 0 is refused."""
        self.assertRefused("[failover]\nreload_interval = 0\n" + SERVER_A, "failover", "reload_interval")

    def test_reload_interval_negative_is_refused(self):
        """reload_interval = -0.5 is refused."""
        self.assertRefused("[failover]\nreload_interval = -0.5\n" + SERVER_A, "failover", "reload_interval")

    def test_reload_interval_nan_is_refused(self):
        """reload_interval = nan is refused."""
        self.assertRefused("[failover]\nreload_interval = nan\n" + SERVER_A, "failover", "reload_interval")

    def test_reload_interval_infinite_is_refused(self):
        """reload_interval = inf is refused."""
        self.assertRefused("[failover]\nreload_interval = inf\n" + SERVER_A, "failover", "reload_interval")

    def test_failover_section_with_a_name_is_an_unknown_section(self):
        """[failover:x] is not the [failover] section."""
        self.assertRefused("[failover:x]\nheartbeat_interval = 1\n" + SERVER_A, "failover:x")


class UnknownKeyTests(ConfigErrorAssertions, unittest.TestCase):
    """An unknown key's error says which key was probably meant."""

    def test_a_near_miss_names_the_key_meant(self):
        """treshold in a server's section: did you mean threshold?"""
        error = self.assertRefused(server_section(treshold="3"), "server:serv_a", "treshold")

        self.assertIn("unknown key; did you mean threshold?", str(error))

    def test_a_key_in_the_wrong_section_names_the_section_it_belongs_in(self):
        """threshold in [failover] belongs in [server:NAME]; the keys [failover] takes are still listed."""
        error = self.assertRefused("[failover]\nthreshold = 3\n" + SERVER_A, "failover", "threshold")

        self.assertIn("threshold belongs in [server:NAME]", str(error))
        self.assertIn("heartbeat_interval", error.allowed)

    def test_a_key_in_the_wrong_case_is_named_in_its_case(self):
        """Heartbeat_Interval: did you mean heartbeat_interval? (keys are case-sensitive)."""
        error = self.assertRefused("[failover]\nHeartbeat_Interval = 1\n" + SERVER_A, "failover", "Heartbeat_Interval")

        self.assertIn("did you mean heartbeat_interval? (keys are case-sensitive)", str(error))

    def test_a_key_like_no_other_suggests_nothing(self):
        """colour is like no key: the error lists the keys there are and suggests none."""
        error = self.assertRefused(SERVER_A + "[listener:web]\nplugin = web\ncolour = blue\n", "listener:web", "colour")

        self.assertNotIn("did you mean", str(error))
        self.assertIn("plugin", error.allowed)


class SecretFileTests(ConfigErrorAssertions, unittest.TestCase):
    """[failover] secret_file: a readable file, relative to the configuration file."""

    def setUp(self):
        self.folder = self.temporary_path()
        os.makedirs(self.folder)
        self.config_path = os.path.join(self.folder, "failover.ini")

    def write(self, name, data=b"key"):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_relative_secret_file_is_relative_to_the_config_folder(self):
        """secret_file = failover.key names the file beside the configuration file."""
        key = self.write("failover.key")

        config = parse_config("[failover]\nsecret_file = failover.key\n" + SERVER_A, self.config_path)

        self.assertEqual(config.failover.secret_file, key)

    def test_relative_secret_file_does_not_depend_on_the_working_folder(self):
        """The same relative secret_file resolves alike from any working folder."""
        key = self.write("failover.key")
        elsewhere = self.temporary_path()
        os.makedirs(elsewhere)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(elsewhere)

        config = parse_config("[failover]\nsecret_file = failover.key\n" + SERVER_A, self.config_path)

        self.assertEqual(config.failover.secret_file, key)

    def test_absolute_secret_file_is_kept(self):
        """An absolute secret_file is used as it is."""
        other = self.temporary_path()
        with open(other, "wb") as f:
            f.write(b"key")

        config = parse_config(f"[failover]\nsecret_file = {other}\n" + SERVER_A, self.config_path)

        self.assertEqual(config.failover.secret_file, other)

    def test_a_key_written_where_the_path_belongs_is_refused_without_showing_it(self):
        """secret_file = <the key itself>: the error says so and never repeats the value."""
        key = "9f" * 32
        error = self.assertRaises(ConfigError, parse_config, f"[failover]\nsecret_file = {key}\n", self.config_path)
        self.assertIn("looks like a key", str(error))
        self.assertNotIn(key[:16], str(error))

    def test_missing_secret_file_is_refused(self):
        """A secret_file that does not exist is an error that shows where it was looked for."""
        error = self.assertRefused(
            "[failover]\nsecret_file = nope.key\n" + SERVER_A, "failover", "secret_file", path=self.config_path,
        )

        self.assertIn(os.path.join(self.folder, "nope.key"), str(error))

    def test_secret_file_that_is_a_folder_is_refused(self):
        """A secret_file naming a folder is not a key file."""
        os.makedirs(os.path.join(self.folder, "keys"))

        self.assertRefused("[failover]\nsecret_file = keys\n" + SERVER_A, "failover", "secret_file", path=self.config_path)

    def test_unreadable_secret_file_is_refused(self):
        """A secret_file this user may not read is an error (simulated: tests may run as root)."""
        key = self.write("failover.key")
        real_access = os.access
        self.patch(os, "access", lambda p, mode: False if p == key else real_access(p, mode))

        error = self.assertRefused(
            "[failover]\nsecret_file = failover.key\n" + SERVER_A, "failover", "secret_file", path=self.config_path,
        )

        self.assertIn("not readable", str(error))

    def test_empty_secret_file_is_refused(self):
        """secret_file = (nothing) is an error, not the configuration folder."""
        self.assertRefused("[failover]\nsecret_file =\n" + SERVER_A, "failover", "secret_file", path=self.config_path)

    def test_read_config_resolves_secret_file_beside_the_file_it_read(self):
        """read_config resolves a relative secret_file against the file's own folder."""
        key = self.write("failover.key")
        self.write("failover.ini", ("[failover]\nsecret_file = failover.key\n" + SERVER_A).encode())

        config = read_config(self.config_path)

        self.assertEqual(config.failover.secret_file, key)


class ServerSectionTests(ConfigErrorAssertions, unittest.TestCase):
    """The [server:NAME] sections."""

    def test_server_keeps_its_three_fields(self):
        """backup_location, heartbeat_port and threshold are read as written."""
        config = parse_config(SERVER_A, PATH)

        server = config.server("serv_a")
        self.assertEqual(
            (server.name, server.backup_location, server.heartbeat_port, server.threshold),
            ("serv_a", "iam2:1200", "1200", 3.0),
        )

    def test_several_servers_are_kept_by_name(self):
        """Every [server:NAME] section becomes one entry, keyed by NAME."""
        config = parse_config(SERVER_A + SERVER_B, PATH)

        self.assertEqual(sorted(config.servers), ["serv_a", "serv_b"])
        self.assertEqual(config.servers["serv_b"].backup_location, "iam1:1200")

    def test_threshold_may_be_fractional(self):
        """threshold = 2.5 is two and a half seconds."""
        config = parse_config(server_section(threshold="2.5"), PATH)

        self.assertEqual(config.server("serv_a").threshold, 2.5)

    def test_threshold_just_above_heartbeat_interval_is_accepted(self):
        """A threshold only slightly greater than heartbeat_interval is allowed."""
        config = parse_config("[failover]\nheartbeat_interval = 0.5\n" + server_section(threshold="0.6"), PATH)

        self.assertEqual(config.server("serv_a").threshold, 0.6)

    def test_console_is_optional(self):
        """Without a console key a server has no console."""
        config = parse_config(SERVER_A, PATH)

        self.assertIsNone(config.server("serv_a").console)

    def test_console_bare_port_listens_on_loopback_only(self):
        """console = 8081 means tcp:8081:interface=127.0.0.1: the console is on loopback unless configured otherwise."""
        config = parse_config(server_section(console="8081"), PATH)

        self.assertEqual(config.server("serv_a").console, "tcp:8081:interface=127.0.0.1")

    def test_console_endpoint_string_is_kept(self):
        """console = tcp:8081:interface=127.0.0.1 is kept as written."""
        config = parse_config(server_section(console="tcp:8081:interface=127.0.0.1"), PATH)

        self.assertEqual(config.server("serv_a").console, "tcp:8081:interface=127.0.0.1")

    def test_heartbeat_port_bare_port_is_a_tcp_server_endpoint(self):
        """heartbeat_port = 1200 listens on tcp:1200."""
        config = parse_config(server_section(heartbeat_port="1200"), PATH)

        self.assertEqual(config.server("serv_a").heartbeat_endpoint, "tcp:1200")

    def test_heartbeat_port_endpoint_string_is_kept(self):
        """heartbeat_port = tcp:1200:interface=10.0.0.1 listens there as written."""
        config = parse_config(server_section(heartbeat_port="tcp:1200:interface=10.0.0.1"), PATH)

        server = config.server("serv_a")
        self.assertEqual(server.heartbeat_port, "tcp:1200:interface=10.0.0.1")
        self.assertEqual(server.heartbeat_endpoint, "tcp:1200:interface=10.0.0.1")

    def test_heartbeat_port_65535_is_accepted(self):
        """The highest port number is allowed."""
        config = parse_config(server_section(heartbeat_port="65535"), PATH)

        self.assertEqual(config.server("serv_a").heartbeat_endpoint, "tcp:65535")

    def test_backup_location_host_port_becomes_a_tcp_client_endpoint(self):
        """backup_location = iam2:1200 connects with tcp:host=iam2:port=1200."""
        config = parse_config(server_section(backup_location="iam2:1200"), PATH)

        self.assertEqual(config.server("serv_a").backup_endpoint, "tcp:host=iam2:port=1200")

    def test_backup_location_ipv4_address_and_port_is_accepted(self):
        """backup_location = 10.0.0.2:1200 connects to that address."""
        config = parse_config(server_section(backup_location="10.0.0.2:1200"), PATH)

        self.assertEqual(config.server("serv_a").backup_endpoint, "tcp:host=10.0.0.2:port=1200")

    def test_backup_location_endpoint_string_is_kept(self):
        """backup_location = tcp:host=iam2:port=1200:timeout=5 is used as written."""
        config = parse_config(server_section(backup_location="tcp:host=iam2:port=1200:timeout=5"), PATH)

        server = config.server("serv_a")
        self.assertEqual(server.backup_location, "tcp:host=iam2:port=1200:timeout=5")
        self.assertEqual(server.backup_endpoint, "tcp:host=iam2:port=1200:timeout=5")

    def test_missing_backup_location_is_refused(self):
        """A server without backup_location is an error naming that key."""
        self.assertRefused(server_section(backup_location=None), "server:serv_a", "backup_location")

    def test_missing_heartbeat_port_is_refused(self):
        """A server without heartbeat_port is an error naming that key."""
        self.assertRefused(server_section(heartbeat_port=None), "server:serv_a", "heartbeat_port")

    def test_missing_threshold_is_refused(self):
        """A server without threshold is an error naming that key."""
        self.assertRefused(server_section(threshold=None), "server:serv_a", "threshold")

    def test_empty_required_value_counts_as_missing(self):
        """backup_location = (nothing) is refused as missing."""
        error = self.assertRefused(server_section(backup_location=""), "server:serv_a", "backup_location")

        self.assertIn("missing", str(error))

    def test_unknown_key_is_refused(self):
        """A key [server:NAME] does not know is an error naming it."""
        self.assertRefused(server_section(location="iam2:1200"), "server:serv_a", "location")

    def test_threshold_not_a_number_is_refused(self):
        """threshold = three is not a number of seconds."""
        self.assertRefused(server_section(threshold="three"), "server:serv_a", "threshold")

    def test_threshold_zero_is_refused(self):
        """threshold = 0 is refused."""
        self.assertRefused(server_section(threshold="0"), "server:serv_a", "threshold")

    def test_threshold_negative_is_refused(self):
        """threshold = -3 is refused."""
        self.assertRefused(server_section(threshold="-3"), "server:serv_a", "threshold")

    def test_threshold_nan_is_refused(self):
        """threshold = nan is refused."""
        self.assertRefused(server_section(threshold="nan"), "server:serv_a", "threshold")

    def test_threshold_infinite_is_refused(self):
        """threshold = inf is refused: a backup would never take over."""
        self.assertRefused(server_section(threshold="inf"), "server:serv_a", "threshold")

    def test_threshold_equal_to_heartbeat_interval_is_refused(self):
        """threshold equal to heartbeat_interval is refused: every pause would look like silence."""
        error = self.assertRefused(
            "[failover]\nheartbeat_interval = 2\n" + server_section(threshold="2"), "server:serv_a", "threshold",
        )

        self.assertIn("heartbeat_interval", str(error))

    def test_threshold_below_heartbeat_interval_is_refused(self):
        """threshold smaller than heartbeat_interval is refused."""
        self.assertRefused(
            "[failover]\nheartbeat_interval = 2\n" + server_section(threshold="1.5"), "server:serv_a", "threshold",
        )

    def test_threshold_compared_with_default_heartbeat_interval(self):
        """Without [failover], threshold must still exceed the default interval of 1 s."""
        self.assertRefused(server_section(threshold="1"), "server:serv_a", "threshold")

    def test_heartbeat_port_above_65535_is_refused(self):
        """heartbeat_port = 65536 is not a port."""
        error = self.assertRefused(server_section(heartbeat_port="65536"), "server:serv_a", "heartbeat_port")

        self.assertIn("out of range", str(error))

    def test_heartbeat_port_bad_endpoint_string_is_refused(self):
        """heartbeat_port = nope:1200 is neither a port nor a server endpoint."""
        self.assertRefused(server_section(heartbeat_port="nope:1200"), "server:serv_a", "heartbeat_port")

    def test_heartbeat_port_endpoint_with_bad_port_is_refused(self):
        """heartbeat_port = tcp:abc is a server endpoint with a bad port."""
        self.assertRefused(server_section(heartbeat_port="tcp:abc"), "server:serv_a", "heartbeat_port")

    def test_heartbeat_port_negative_is_refused(self):
        """heartbeat_port = -1 is not a port."""
        self.assertRefused(server_section(heartbeat_port="-1"), "server:serv_a", "heartbeat_port")

    def test_console_above_65535_is_refused(self):
        """console = 70000 is not a port."""
        self.assertRefused(server_section(console="70000"), "server:serv_a", "console")

    def test_console_bad_endpoint_string_is_refused(self):
        """console = web:8081 is not a server endpoint."""
        self.assertRefused(server_section(console="web:8081"), "server:serv_a", "console")

    def test_console_empty_is_refused(self):
        """console = (nothing) is an error, not "no console"."""
        self.assertRefused(server_section(console=""), "server:serv_a", "console")

    def test_backup_location_port_above_65535_is_refused(self):
        """backup_location = iam2:70000 names no port."""
        error = self.assertRefused(server_section(backup_location="iam2:70000"), "server:serv_a", "backup_location")

        self.assertIn("out of range", str(error))

    def test_backup_location_without_port_is_refused(self):
        """backup_location = iam2 is neither host:port nor a client endpoint."""
        self.assertRefused(server_section(backup_location="iam2"), "server:serv_a", "backup_location")

    def test_backup_location_bad_endpoint_string_is_refused(self):
        """backup_location = bogus:x is not a client endpoint."""
        self.assertRefused(server_section(backup_location="bogus:x"), "server:serv_a", "backup_location")

    def test_backup_location_endpoint_with_bad_port_is_refused(self):
        """backup_location = tcp:host=iam2:port=abc has a bad port."""
        self.assertRefused(server_section(backup_location="tcp:host=iam2:port=abc"), "server:serv_a", "backup_location")

    def test_server_name_with_a_space_is_refused(self):
        """[server:serv a] is not a server name."""
        error = self.assertRefused(server_section(name="serv a"), "server:serv a")

        self.assertIn("bad server name", str(error))

    def test_server_name_starting_with_a_dash_is_refused(self):
        """[server:-a] is not a server name: it must start with a letter or digit."""
        self.assertRefused(server_section(name="-a"), "server:-a")

    def test_server_name_of_65_characters_is_refused(self):
        """A server name longer than 64 characters is refused."""
        name = "s" * 65

        self.assertRefused(server_section(name=name), f"server:{name}")

    def test_server_name_of_64_characters_is_accepted(self):
        """A server name of exactly 64 characters is allowed."""
        name = "s" * 64

        config = parse_config(server_section(name=name), PATH)

        self.assertEqual(list(config.servers), [name])

    def test_server_name_non_ascii_is_refused(self):
        """[server:sérv] is refused: names are ASCII."""
        self.assertRefused(server_section(name="sérv"), "server:sérv")

    def test_server_section_without_a_name_is_an_unknown_section(self):
        """[server:] names no server."""
        self.assertRefused(server_section(name=""), "server:")

    def test_server_section_lookup_returns_the_section(self):
        """SharedConfig.server(NAME) is that [server:NAME]."""
        config = parse_config(SERVER_A + SERVER_B, PATH)

        self.assertEqual(config.server("serv_b").name, "serv_b")

    def test_server_lookup_of_unknown_name_lists_the_sections_there_are(self):
        """SharedConfig.server() for a name with no section names the file and every section there is."""
        config = parse_config(SERVER_B + SERVER_A, PATH)

        error = self.assertRaises(ConfigError, config.server, "serv_c")

        self.assertErrorNames(error, "server:serv_c")
        self.assertIn("[server:serv_a], [server:serv_b]", str(error))


class SecondAddressTests(ConfigErrorAssertions, unittest.TestCase):
    """[server:NAME] second_address: an IP address literal (pulses go there without a lookup)."""

    def test_an_address_of_either_family_is_taken_as_written_canonically(self):
        for text, value in (("192.168.2.11", "192.168.2.11"), ("FD00:2::11", "fd00:2::11")):
            config = parse_config("[failover]\ninsecure = true\n" + SERVER_A + f"second_address = {text}\n" + SERVER_B, PATH)
            self.assertEqual(config.servers["serv_a"].second_address, value)
            self.assertIsNone(config.servers["serv_b"].second_address)

    def test_a_host_name_or_a_multicast_address_is_refused_naming_the_key(self):
        for text, why in (("iam2-second", "not an IP address"), ("224.0.0.18", "multicast, broadcast or unspecified"),
                          ("0.0.0.0", "multicast, broadcast or unspecified"),
                          ("255.255.255.255", "multicast, broadcast or unspecified")):
            error = self.assertRefused("[failover]\ninsecure = true\n" + SERVER_A + f"second_address = {text}\n" + SERVER_B,
                                       "server:serv_a", "second_address")
            self.assertIn(why, str(error))
            self.assertIn("no host name", str(error))


class ListenerSectionTests(ConfigErrorAssertions, unittest.TestCase):
    """The [listener:NAME] sections."""

    def test_plugin_is_split_into_plugin_name_and_arguments(self):
        """plugin = web --listen tcp:8080 gives the plugin 'web' and its arguments."""
        config = parse_config(SERVER_A + "[listener:web]\nplugin = web --listen tcp:8080 --path /srv/www\n", PATH)

        listener = config.listeners["web"]
        self.assertEqual(listener.name, "web")
        self.assertEqual(listener.plugin, "web")
        self.assertEqual(listener.args, ("--listen", "tcp:8080", "--path", "/srv/www"))

    def test_plugin_arguments_follow_shell_quoting(self):
        """A quoted argument with spaces stays one argument."""
        config = parse_config(SERVER_A + "[listener:web]\nplugin = web --path '/srv/my site'\n", PATH)

        self.assertEqual(config.listeners["web"].args, ("--path", "/srv/my site"))

    def test_command_line_quotes_the_words_again(self):
        """command_line gives back a shell line that splits into the same words."""
        config = parse_config(SERVER_A + "[listener:web]\nplugin = web --path '/srv/my site'\n", PATH)

        self.assertEqual(config.listeners["web"].command_line, "web --path '/srv/my site'")

    def test_plugin_existence_is_not_checked_here(self):
        """An unknown plugin name is accepted by the parser (it is checked elsewhere)."""
        config = parse_config(SERVER_A + "[listener:x]\nplugin = no-such-plugin --flag\n", PATH)

        self.assertEqual(config.listeners["x"].plugin, "no-such-plugin")

    def test_servers_default_to_every_server(self):
        """Without servers, a listener has servers None and runs on every server."""
        config = parse_config(SERVER_A + SERVER_B + "[listener:web]\nplugin = web\n", PATH)

        listener = config.listeners["web"]
        self.assertIsNone(listener.servers)
        self.assertTrue(listener.runs_on("serv_a"))
        self.assertTrue(listener.runs_on("serv_b"))

    def test_servers_list_is_split_on_commas(self):
        """servers = serv_a, serv_b gives the two names, spaces dropped."""
        config = parse_config(SERVER_A + SERVER_B + "[listener:web]\nplugin = web\nservers = serv_a ,serv_b\n", PATH)

        self.assertEqual(config.listeners["web"].servers, ("serv_a", "serv_b"))

    def test_listener_runs_only_on_its_servers(self):
        """A listener limited to serv_a does not run on serv_b."""
        listener = ListenerSettings(name="web", plugin="web", args=(), servers=("serv_a",))

        self.assertTrue(listener.runs_on("serv_a"))
        self.assertFalse(listener.runs_on("serv_b"))

    def test_listeners_for_gives_each_server_its_listeners(self):
        """listeners_for(NAME) holds the listeners that run on NAME, and only those."""
        config = parse_config(
            SERVER_A + SERVER_B
            + "[listener:web]\nplugin = web\n"
            + "[listener:ftp]\nplugin = ftp\nservers = serv_b\n",
            PATH,
        )

        self.assertEqual(sorted(config.listeners_for("serv_a")), ["web"])
        self.assertEqual(sorted(config.listeners_for("serv_b")), ["ftp", "web"])

    def test_missing_plugin_is_refused(self):
        """A listener without plugin is an error naming that key."""
        self.assertRefused(SERVER_A + "[listener:web]\nservers = serv_a\n", "listener:web", "plugin")

    def test_empty_plugin_is_refused(self):
        """plugin = (nothing) is refused as missing."""
        self.assertRefused(SERVER_A + "[listener:web]\nplugin =\n", "listener:web", "plugin")

    def test_plugin_with_unbalanced_quote_is_refused(self):
        """plugin = web --path 'x cannot be split into words."""
        self.assertRefused(SERVER_A + "[listener:web]\nplugin = web --path 'x\n", "listener:web", "plugin")

    def test_unknown_key_is_refused(self):
        """A key [listener:NAME] does not know is an error naming it."""
        self.assertRefused(SERVER_A + "[listener:web]\nplugin = web\nport = 8080\n", "listener:web", "port")

    def test_servers_naming_an_unknown_server_is_refused(self):
        """servers = serv_a, serv_z is refused: there is no [server:serv_z]."""
        error = self.assertRefused(
            SERVER_A + "[listener:web]\nplugin = web\nservers = serv_a, serv_z\n", "listener:web", "servers",
        )

        self.assertIn("serv_z", str(error))

    def test_empty_servers_is_refused(self):
        """servers = (nothing) is refused, not read as "every server"."""
        self.assertRefused(SERVER_A + "[listener:web]\nplugin = web\nservers =\n", "listener:web", "servers")

    def test_servers_of_only_commas_is_refused(self):
        """servers = , , names no server and is refused."""
        self.assertRefused(SERVER_A + "[listener:web]\nplugin = web\nservers = , ,\n", "listener:web", "servers")

    def test_bad_listener_name_is_refused(self):
        """[listener:my web] is not a listener name."""
        error = self.assertRefused(SERVER_A + "[listener:my web]\nplugin = web\n", "listener:my web")

        self.assertIn("bad listener name", str(error))

    def test_listener_section_without_a_name_is_an_unknown_section(self):
        """[listener] names no listener."""
        self.assertRefused(SERVER_A + "[listener]\nplugin = web\n", "listener")


class FileStructureTests(ConfigErrorAssertions, unittest.TestCase):
    """Sections, duplicates and syntax of the file as a whole."""

    def test_unknown_section_is_refused(self):
        """[logging] is not a section of this file."""
        error = self.assertRefused(SERVER_A + "[logging]\nlevel = info\n", "logging")

        self.assertIn("[failover], [server:NAME], [listener:NAME]", str(error))

    def test_default_section_is_refused(self):
        """[DEFAULT] is refused rather than silently adding keys to every section."""
        self.assertRefused("[DEFAULT]\nthreshold = 3\n" + SERVER_A, "DEFAULT")

    def test_duplicate_key_is_refused(self):
        """A key given twice in one section is an error naming both."""
        self.assertRefused(SERVER_A + "threshold = 4\n", "server:serv_a", "threshold")

    def test_duplicate_section_is_refused(self):
        """A section given twice is an error naming it."""
        self.assertRefused(SERVER_A + SERVER_A.replace("3", "4"), "server:serv_a")

    def test_text_before_the_first_section_is_refused(self):
        """A key = value line before any [section] is an error showing that line."""
        error = self.assertRefused("threshold = 3\n" + SERVER_A, None)

        self.assertIn("threshold = 3", str(error))
        self.assertIn("line 1", str(error))

    def test_line_that_is_not_key_value_is_refused(self):
        """A line without = inside a section is an error giving its number."""
        error = self.assertRefused(SERVER_A + "oops\n", None)

        self.assertIn("line 5", str(error))

    def test_a_bad_line_is_shown_as_written_with_its_number(self):
        """A line configparser cannot parse reads `cannot parse line 5: [broken`: its text as written, not a repr."""
        error = self.assertRefused(SERVER_A + "[broken  \n", None)

        self.assertIn("cannot parse line 5: [broken (allowed:", str(error))
        self.assertNotIn("\\n", str(error))
        self.assertNotIn("'", str(error))

    def test_each_bad_line_is_named_once(self):
        """Two bad lines: each once, by its own number, in the file's order."""
        error = self.assertRefused(SERVER_A + "[broken\n; a comment\noops\n", None)

        self.assertIn("cannot parse line 5: [broken, line 7: oops (allowed:", str(error))

    def test_a_mistyped_section_kind_has_did_you_mean(self):
        """[listner:web] is refused with the section meant: [listener:web]."""
        error = self.assertRefused(SERVER_A + "[listner:web]\nplugin = web\n", "listner:web")

        self.assertIn("unknown section; did you mean [listener:web]?", str(error))

    def test_a_mistyped_failover_section_has_did_you_mean(self):
        """[failvoer] is refused with the section meant: [failover]."""
        error = self.assertRefused("[failvoer]\nheartbeat_interval = 1\n" + SERVER_A, "failvoer")

        self.assertIn("did you mean [failover]?", str(error))

    def test_a_server_section_without_a_name_says_it_needs_one(self):
        """[server] alone is refused, saying a server section is [server:NAME]."""
        error = self.assertRefused(SERVER_A + "[server]\nthreshold = 3\n", "server")

        self.assertIn("a server section needs a name: [server:NAME]", str(error))

    def test_no_server_section_is_refused(self):
        """A file without any [server:NAME] section is refused."""
        error = self.assertRefused("[failover]\nheartbeat_interval = 1\n", None)

        self.assertIn("[server:NAME]", str(error))

    def test_empty_file_is_refused(self):
        """An empty file has no server and is refused."""
        self.assertRefused("", None)

    def test_digest_changes_when_the_text_changes(self):
        """Two texts that differ give two digests."""
        first = parse_config(SERVER_A, PATH)
        second = parse_config(SERVER_A.replace("threshold = 3", "threshold = 4"), PATH)

        self.assertNotEqual(first.digest, second.digest)

    def test_digest_changes_even_for_a_comment(self):
        """The digest follows the text, so an edited comment changes it too."""
        first = parse_config(SERVER_A, PATH)
        second = parse_config("; edited\n" + SERVER_A, PATH)

        self.assertNotEqual(first.digest, second.digest)

    def test_digest_is_the_same_for_the_same_text(self):
        """Parsing the same text twice gives the same digest."""
        self.assertEqual(parse_config(SERVER_A, PATH).digest, parse_config(SERVER_A, PATH).digest)

    def test_config_remembers_its_path(self):
        """The settings keep the path they were read from."""
        self.assertEqual(parse_config(SERVER_A, PATH).path, PATH)


class ReadConfigTests(ConfigErrorAssertions, unittest.TestCase):
    """read_config: the file on disk."""

    def setUp(self):
        self.path = self.temporary_path()

    def write(self, data):
        with open(self.path, "wb") as f:
            f.write(data)

    def test_reads_and_parses_the_file(self):
        """read_config parses the file's text and keeps its path."""
        self.write(SERVER_A.encode("utf-8"))

        config = read_config(self.path)

        self.assertEqual(config.path, self.path)
        self.assertEqual(config.server("serv_a").backup_location, "iam2:1200")

    def test_utf8_comments_are_read(self):
        """A UTF-8 comment (non-ASCII) does not stop the file being read."""
        self.write(("; Sérveur de secours\n" + SERVER_A).encode("utf-8"))

        config = read_config(self.path)

        self.assertEqual(list(config.servers), ["serv_a"])

    def test_missing_file_is_refused(self):
        """A file that does not exist is a ConfigError naming it."""
        error = self.assertRaises(ConfigError, read_config, self.path)

        self.assertErrorNames(error, None, path=self.path)
        self.assertIn("cannot read", str(error))

    def test_unreadable_file_is_refused(self):
        """A path that cannot be read as a file (a folder) is a ConfigError naming it."""
        os.makedirs(self.path)

        error = self.assertRaises(ConfigError, read_config, self.path)

        self.assertErrorNames(error, None, path=self.path)

    def test_non_utf8_file_is_refused(self):
        """A file that is not UTF-8 is a ConfigError naming it and the bad byte."""
        self.write(b"; caf\xe9\n" + SERVER_A.encode("utf-8"))

        error = self.assertRaises(ConfigError, read_config, self.path)

        self.assertErrorNames(error, None, path=self.path)
        self.assertIn("not UTF-8", str(error))
        self.assertIn("byte 5", str(error))

    def test_errors_in_the_file_name_the_file(self):
        """A bad value in the file read is reported against that file's path."""
        self.write(server_section(threshold="x").encode("utf-8"))

        error = self.assertRaises(ConfigError, read_config, self.path)

        self.assertErrorNames(error, "server:serv_a", "threshold", path=self.path)


class EndpointStringTests(unittest.TestCase):
    """The helpers that turn the short forms into endpoint strings."""

    def test_client_endpoint_string_from_host_and_port(self):
        """iam2:1200 becomes tcp:host=iam2:port=1200."""
        self.assertEqual(client_endpoint_string("iam2:1200"), "tcp:host=iam2:port=1200")

    def test_client_endpoint_string_ignores_surrounding_spaces(self):
        """Spaces around host:port do not matter."""
        self.assertEqual(client_endpoint_string("  iam2:1200 "), "tcp:host=iam2:port=1200")

    def test_client_endpoint_string_keeps_an_endpoint_string(self):
        """Text that is not host:port is already a client endpoint string."""
        self.assertEqual(client_endpoint_string("unix:path=/run/iway.sock"), "unix:path=/run/iway.sock")

    def test_server_endpoint_string_from_a_bare_port(self):
        """1200 becomes tcp:1200."""
        self.assertEqual(server_endpoint_string("1200"), "tcp:1200")

    def test_server_endpoint_string_ignores_surrounding_spaces(self):
        """Spaces around a bare port do not matter."""
        self.assertEqual(server_endpoint_string(" 1200 "), "tcp:1200")

    def test_server_endpoint_string_keeps_an_endpoint_string(self):
        """tcp:1200:interface=10.0.0.1 stays as it is."""
        self.assertEqual(server_endpoint_string("tcp:1200:interface=10.0.0.1"), "tcp:1200:interface=10.0.0.1")

    def test_backup_host_of_host_and_port(self):
        """The host of iam2:1200 is iam2."""
        self.assertEqual(backup_host("iam2:1200"), "iam2")

    def test_backup_host_of_ipv6_address_and_port(self):
        """The host of [fe80::1]:1200 is fe80::1, without brackets."""
        self.assertEqual(backup_host("[fe80::1]:1200"), "fe80::1")

    def test_backup_host_of_an_endpoint_string(self):
        """The host of tcp:host=iam2:port=1200 is iam2."""
        self.assertEqual(backup_host("tcp:host=iam2:port=1200"), "iam2")

    def test_backup_host_of_an_endpoint_without_host(self):
        """An endpoint without a host (a UNIX socket) has no backup host."""
        self.assertIsNone(backup_host("unix:path=/run/iway.sock"))


class RegressionTests(ConfigErrorAssertions, unittest.TestCase):
    """Mistakes found in review, kept from coming back."""

    def test_ipv6_backup_location_is_accepted(self):
        """[v6]:port, allowed by the contract, parses into a client endpoint Twisted knows."""
        config = parse_config(server_section(backup_location="[::1]:1200"), PATH)
        self.assertEqual(config.servers["serv_a"].backup_endpoint, r"tcp:host=\:\:1:port=1200")

    def test_name_with_a_trailing_newline_is_refused(self):
        """A server name may not end in a newline (a pattern ending in $ would let it through)."""
        from iwayfailover.config import NAME_PATTERN

        self.assertIsNone(NAME_PATTERN.match("serv_a\n"))

    def test_non_ascii_digits_are_a_config_error(self):
        """A port written with a superscript digit is a ConfigError, not a crash."""
        self.assertRefused(server_section(heartbeat_port="²"), "server:serv_a", "heartbeat_port")
        self.assertRefused(server_section(console="²"), "server:serv_a", "console")

    def test_endpoint_string_ports_are_range_checked(self):
        """Ports over 65535 are refused in endpoint strings too, not only as bare numbers."""
        self.assertRefused(server_section(heartbeat_port="tcp:99999"), "server:serv_a", "heartbeat_port")
        self.assertRefused(server_section(console="tcp:99999"), "server:serv_a", "console")
        self.assertRefused(server_section(backup_location="tcp:host=x:port=70000"), "server:serv_a", "backup_location")


ETCD_FAILOVER = """\
[failover]
coordinator = etcd
etcd_endpoints = http://10.0.0.5:2379, http://10.0.0.6:2379
"""


def group(failover=ETCD_FAILOVER, *servers):
    """A group's configuration: C{failover}, then each server's section (threshold 3 only, by default)."""
    return failover + "".join(servers or [f"[server:{name}]\nthreshold = 3\n" for name in ("alpha", "beta", "gamma")])


class CoordinatorTests(ConfigErrorAssertions, unittest.TestCase):
    """[failover] coordinator: pair (the default) or etcd, and what each needs or refuses."""

    def test_the_coordinator_is_pair_by_default(self):
        """A file without coordinator is a pair, as every file before groups was."""
        config = parse_config(SERVER_A + SERVER_B, PATH)

        self.assertEqual(config.failover.coordinator, "pair")
        self.assertFalse(config.failover.group)

    def test_an_unknown_coordinator_is_refused(self):
        """coordinator = zookeeper names the two there are."""
        error = self.assertRefused("[failover]\ncoordinator = zookeeper\n" + SERVER_A, "failover", "coordinator")

        self.assertIn("pair", error.allowed)
        self.assertIn("etcd", error.allowed)

    def test_a_group_of_three_servers_needs_only_their_thresholds(self):
        """With etcd, backup_location and heartbeat_port are not needed, and any number of servers is kept."""
        config = parse_config(group(), PATH)

        self.assertTrue(config.failover.group)
        self.assertEqual(sorted(config.servers), ["alpha", "beta", "gamma"])
        self.assertIsNone(config.servers["alpha"].backup_location)
        self.assertIsNone(config.servers["alpha"].heartbeat_port)
        self.assertEqual(config.servers["alpha"].threshold, 3)

    def test_a_group_of_one_server_is_kept(self):
        """One server on etcd is a group too (the others may join later)."""
        config = parse_config(group(ETCD_FAILOVER, "[server:alpha]\nthreshold = 2\n"), PATH)

        self.assertEqual(list(config.servers), ["alpha"])

    def test_backup_location_and_heartbeat_port_are_allowed_in_a_group(self):
        """A pair's file turned into a group keeps its heartbeat keys: allowed, and still checked."""
        config = parse_config(group(ETCD_FAILOVER, SERVER_A, SERVER_B), PATH)

        self.assertEqual(config.servers["serv_a"].backup_location, "iam2:1200")

    def test_a_bad_backup_location_is_refused_in_a_group_too(self):
        """Not used is not unchecked: a bad value is an error whatever the coordinator."""
        self.assertRefused(
            group(ETCD_FAILOVER, server_section("alpha", backup_location="iam2:99999")), "server:alpha", "backup_location",
        )

    def test_a_pair_still_needs_backup_location(self):
        """Without coordinator = etcd every server keeps all three keys, with the same words as before."""
        error = self.assertRefused(server_section(backup_location=None), "server:serv_a", "backup_location")

        self.assertIn("every server keeps all of backup_location, heartbeat_port and threshold", str(error))

    def test_a_group_server_without_threshold_is_refused(self):
        """threshold is the lease TTL: every server of a group sets it."""
        error = self.assertRefused(group(ETCD_FAILOVER, "[server:alpha]\npriority = 3\n"), "server:alpha", "threshold")

        self.assertIn("coordinator = etcd", str(error))

    def test_witness_is_refused_in_a_group(self):
        """witness is a pair's arbiter; etcd is the group's: the error says which coordinator takes it."""
        error = self.assertRefused(group(ETCD_FAILOVER + "witness = 10.0.0.9:22\n"), "failover", "witness")

        self.assertIn("only with coordinator = pair", str(error))

    def test_self_fence_is_refused_in_a_group(self):
        """self_fence, even set to its default, is refused with etcd: a group's live node fences by its lease."""
        self.assertRefused(group(ETCD_FAILOVER + "self_fence = true\n"), "failover", "self_fence")

    def test_an_etcd_key_is_refused_in_a_pair(self):
        """etcd_endpoints without coordinator = etcd is a mistake the error names, with the fix."""
        error = self.assertRefused(
            "[failover]\netcd_endpoints = http://10.0.0.5:2379\n" + SERVER_A, "failover", "etcd_endpoints",
        )

        self.assertIn("coordinator = etcd", error.allowed)

    def test_the_coordinator_may_come_after_the_servers(self):
        """The coordinator is read first, wherever [failover] stands in the file."""
        config = parse_config("[server:alpha]\nthreshold = 3\n" + ETCD_FAILOVER, PATH)

        self.assertTrue(config.failover.group)

    def test_a_coordinator_change_takes_effect_at_the_next_start(self):
        """A reload that changes the coordinator says it applies at the next start."""
        from iwayfailover.config import changed_keys

        lines = changed_keys(parse_config(SERVER_A + SERVER_B, PATH), parse_config(group(ETCD_FAILOVER, SERVER_A, SERVER_B), PATH))

        self.assertIn("[failover] coordinator pair -> etcd (takes effect at the next start)", lines)


class LeaseTTLTests(ConfigErrorAssertions, unittest.TestCase):
    """With etcd a server's threshold is its leases' TTL: whole seconds, 2 or more."""

    def test_a_whole_threshold_of_2_is_accepted(self):
        """threshold = 2 with heartbeat_interval 0.5: the smallest TTL etcd grants by default."""
        config = parse_config(group(ETCD_FAILOVER + "heartbeat_interval = 0.5\n", "[server:alpha]\nthreshold = 2\n"), PATH)

        self.assertEqual(config.servers["alpha"].threshold, 2)

    def test_a_fractional_threshold_is_refused(self):
        """threshold = 2.5: etcd grants whole seconds; the error says so."""
        error = self.assertRefused(group(ETCD_FAILOVER, "[server:alpha]\nthreshold = 2.5\n"), "server:alpha", "threshold")

        self.assertIn("whole seconds", str(error))
        self.assertIn("'2.5'", str(error))

    def test_a_threshold_of_1_is_refused(self):
        """threshold = 1 is below the 2 s etcd grants at least."""
        error = self.assertRefused(
            group(ETCD_FAILOVER + "heartbeat_interval = 0.25\n", "[server:alpha]\nthreshold = 1\n"), "server:alpha", "threshold",
        )

        self.assertIn("2 or more", error.allowed)

    def test_a_fractional_threshold_is_still_fine_in_a_pair(self):
        """The whole-second rule is etcd's: a pair keeps fractional thresholds."""
        config = parse_config(server_section(threshold="2.5"), PATH)

        self.assertEqual(config.servers["serv_a"].threshold, 2.5)

    def test_the_threshold_must_still_exceed_the_heartbeat_interval(self):
        """threshold 2 with keepalives every 2 s is refused, as in a pair."""
        self.assertRefused(
            group(ETCD_FAILOVER + "heartbeat_interval = 2\n", "[server:alpha]\nthreshold = 2\n"), "server:alpha", "threshold",
        )


class EtcdEndpointsTests(ConfigErrorAssertions, unittest.TestCase):
    """[failover] etcd_endpoints: http(s) URLs with a host and a port, at least one."""

    def endpoints(self, text):
        return parse_config(group(f"[failover]\ncoordinator = etcd\netcd_endpoints = {text}\n"), PATH).failover.etcd_endpoints

    def refused(self, text):
        return self.assertRefused(group(f"[failover]\ncoordinator = etcd\netcd_endpoints = {text}\n"), "failover", "etcd_endpoints")

    def test_the_endpoints_are_a_tuple_of_urls_in_order(self):
        """Three URLs, spaces after the commas, in the order written."""
        self.assertEqual(
            self.endpoints("http://10.0.0.7:2379, http://10.0.0.5:2379,http://etcd-3.example:2379"),
            ("http://10.0.0.7:2379", "http://10.0.0.5:2379", "http://etcd-3.example:2379"),
        )

    def test_an_ipv6_endpoint_keeps_its_brackets(self):
        """http://[::1]:2379 is kept as a URL the client can use."""
        self.assertEqual(self.endpoints("https://[::1]:2379"), ("https://[::1]:2379",))

    def test_a_trailing_slash_is_dropped(self):
        """http://h:2379/ is the same endpoint as http://h:2379."""
        self.assertEqual(self.endpoints("http://h:2379/"), ("http://h:2379",))

    def test_endpoints_are_required_with_etcd(self):
        """coordinator = etcd without etcd_endpoints: the error names the key."""
        error = self.assertRefused(group("[failover]\ncoordinator = etcd\n"), "failover", "etcd_endpoints")

        self.assertIn("missing", str(error))

    def test_empty_endpoints_are_refused(self):
        """etcd_endpoints = (nothing) is as missing."""
        self.refused("")

    def test_a_scheme_other_than_http_is_refused(self):
        """unix:// or grpc:// is not a gateway URL."""
        self.assertIn("http://", str(self.refused("grpc://10.0.0.5:2379")))

    def test_host_port_without_a_scheme_is_refused(self):
        """10.0.0.5:2379 needs http:// or https://."""
        self.refused("10.0.0.5:2379")

    def test_an_endpoint_without_a_port_is_refused(self):
        """http://10.0.0.5: the error suggests etcd's usual port."""
        self.assertIn("2379", str(self.refused("http://10.0.0.5")))

    def test_a_port_out_of_range_is_refused(self):
        """http://h:70000 is no port."""
        self.refused("http://h:70000")

    def test_a_port_that_is_not_a_number_is_refused(self):
        """http://h:port is no port."""
        self.refused("http://h:port")

    def test_an_endpoint_without_a_host_is_refused(self):
        """http://:2379 names no host."""
        self.refused("http://:2379")

    def test_an_endpoint_with_a_path_is_refused(self):
        """http://h:2379/v3 is not an endpoint: the client adds the path."""
        self.refused("http://h:2379/v3")

    def test_a_password_in_the_url_is_refused_without_being_suggested_back(self):
        """http://root:secret@h:2379 points to etcd_user and etcd_password_file."""
        self.assertIn("etcd_password_file", str(self.refused("http://root:secret@h:2379")))

    def test_an_empty_item_is_refused(self):
        """A doubled comma is a mistake, not an endpoint."""
        self.refused("http://a:2379,,http://b:2379")

    def test_an_endpoint_named_twice_is_refused(self):
        """The same endpoint twice is a typo for another one."""
        self.refused("http://a:2379, http://a:2379")

    def test_mixed_schemes_are_refused(self):
        """Some endpoints TLS and some not: refused, the connection is one or the other."""
        self.assertIn("mixes", str(self.refused("http://a:2379, https://b:2379")))


class EtcdPrefixTests(ConfigErrorAssertions, unittest.TestCase):
    """[failover] etcd_prefix: /iwayfailover by default; starts with /, no trailing /, no spaces."""

    def prefix(self, line=""):
        return parse_config(group(ETCD_FAILOVER + line), PATH).failover.etcd_prefix

    def refused(self, text):
        return self.assertRefused(group(ETCD_FAILOVER + f"etcd_prefix = {text}\n"), "failover", "etcd_prefix")

    def test_the_default_prefix(self):
        """Without etcd_prefix the keys live under /iwayfailover."""
        self.assertEqual(self.prefix(), "/iwayfailover")

    def test_a_prefix_is_kept(self):
        """etcd_prefix = /iwayfailover/orders is kept as written."""
        self.assertEqual(self.prefix("etcd_prefix = /iwayfailover/orders\n"), "/iwayfailover/orders")

    def test_a_prefix_without_a_leading_slash_is_refused(self):
        """iwayfailover/orders: refused, the error says a prefix starts with /."""
        self.assertIn("start with /", str(self.refused("iwayfailover/orders")))

    def test_a_prefix_with_a_trailing_slash_is_refused(self):
        """/iwayfailover/ would make keys with //: refused."""
        self.assertIn("ends with /", str(self.refused("/iwayfailover/")))

    def test_the_root_alone_is_refused(self):
        """/ alone ends with /."""
        self.refused("/")

    def test_a_prefix_with_a_space_is_refused(self):
        """/iway failover: refused."""
        self.refused("/iway failover")


class EtcdSecurityTests(ConfigErrorAssertions, unittest.TestCase):
    """TLS to etcd (etcd_cacert, etcd_cert, etcd_key) and etcd's auth (etcd_user, etcd_password_file)."""

    HTTPS = "[failover]\ncoordinator = etcd\netcd_endpoints = https://etcd-1.example:2379\n"

    def setUp(self):
        self.folder = self.temporary_path()
        os.makedirs(self.folder)
        self.config_path = os.path.join(self.folder, "failover.ini")

    def write(self, name, data=b"-----BEGIN CERTIFICATE-----\n", mode=0o600):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def parse(self, lines, failover=HTTPS):
        return parse_config(group(failover + lines), self.config_path)

    def refused(self, lines, key, failover=HTTPS):
        return self.assertRefused(group(failover + lines), "failover", key, path=self.config_path)

    def test_tls_files_are_relative_to_the_configuration_file(self):
        """etcd_cacert, etcd_cert and etcd_key name files beside the configuration, made absolute."""
        ca, cert, key = self.write("ca.crt"), self.write("node.crt"), self.write("node.key")

        failover = self.parse("etcd_cacert = ca.crt\netcd_cert = node.crt\netcd_key = node.key\n").failover

        self.assertEqual((failover.etcd_cacert, failover.etcd_cert, failover.etcd_key), (ca, cert, key))
        self.assertTrue(failover.etcd_tls)

    def test_https_without_cacert_uses_the_system_trust_store(self):
        """No etcd_cacert with https: accepted, etcd_cacert is None (the client trusts the system's CAs)."""
        failover = self.parse("").failover

        self.assertIsNone(failover.etcd_cacert)
        self.assertTrue(failover.etcd_tls)

    def test_a_missing_cacert_is_refused_with_where_it_was_looked_for(self):
        """etcd_cacert = nope.crt: the error shows the absolute path tried."""
        error = self.refused("etcd_cacert = nope.crt\n", "etcd_cacert")

        self.assertIn(os.path.join(self.folder, "nope.crt"), str(error))

    def test_a_cacert_with_http_endpoints_is_refused(self):
        """etcd_cacert with http:// endpoints would not be used: the error says the endpoints are not TLS."""
        self.write("ca.crt")

        error = self.refused("etcd_cacert = ca.crt\n", "etcd_cacert", failover=ETCD_FAILOVER)

        self.assertIn("http://", str(error))
        self.assertIn("https://", error.allowed)

    def test_a_client_certificate_and_a_user_together_are_refused(self):
        """etcd's JSON gateway refuses a request with both a client certificate and a user: the error says which to keep."""
        self.write("node.crt"), self.write("node.key"), self.write("password", b"s3cret\n")

        error = self.refused("etcd_cert = node.crt\netcd_key = node.key\netcd_user = iway\n"
                             "etcd_password_file = password\n", "etcd_user")

        self.assertIn("client certificate", str(error))
        self.assertIn("etcd_cacert goes with either", error.allowed)

    def test_a_cert_without_its_key_is_refused(self):
        """etcd_cert alone: the error names etcd_key, the one missing."""
        self.write("node.crt")

        error = self.refused("etcd_cert = node.crt\n", "etcd_key")

        self.assertIn("etcd_cert", str(error))

    def test_a_key_without_its_cert_is_refused(self):
        """etcd_key alone: the error names etcd_cert."""
        self.write("node.key")

        self.refused("etcd_key = node.key\n", "etcd_cert")

    def test_the_password_is_the_first_line_of_its_file_stripped(self):
        """etcd_password_file's first line, without its spaces and line end, is the password."""
        self.write("etcd.password", b"  s3cret \nsecond line\n")

        failover = self.parse("etcd_user = iway\netcd_password_file = etcd.password\n").failover

        self.assertEqual(failover.etcd_user, "iway")
        self.assertEqual(failover.etcd_password, "s3cret")
        self.assertEqual(failover.etcd_password_file, os.path.join(self.folder, "etcd.password"))

    def test_the_password_is_never_in_the_settings_repr(self):
        """The settings as logged or shown do not carry the password."""
        self.write("etcd.password", b"s3cret-value\n")

        failover = self.parse("etcd_user = iway\netcd_password_file = etcd.password\n").failover

        self.assertNotIn("s3cret-value", repr(failover))

    def test_no_user_means_no_password(self):
        """Without etcd_user, etcd's auth is off: no password."""
        self.assertIsNone(self.parse("").failover.etcd_password)

    def test_a_user_without_a_password_file_is_refused(self):
        """etcd_user alone: the error names etcd_password_file."""
        self.refused("etcd_user = iway\n", "etcd_password_file")

    def test_a_password_file_without_a_user_is_refused(self):
        """etcd_password_file alone: the error names etcd_user."""
        self.write("etcd.password", b"s3cret\n")

        self.refused("etcd_password_file = etcd.password\n", "etcd_user")

    def test_a_password_file_others_can_read_is_refused_with_the_fix(self):
        """Mode 0644: refused, with the chmod that fixes it."""
        path = self.write("etcd.password", b"s3cret\n", mode=0o644)

        error = self.refused("etcd_user = iway\netcd_password_file = etcd.password\n", "etcd_password_file")

        self.assertIn("every user can read it", str(error))
        self.assertIn(f"chmod 600 {path}", str(error))

    def test_a_password_file_its_group_can_read_is_refused(self):
        """Mode 0640: refused too."""
        self.write("etcd.password", b"s3cret\n", mode=0o640)

        error = self.refused("etcd_user = iway\netcd_password_file = etcd.password\n", "etcd_password_file")

        self.assertIn("its group can read it", str(error))

    def test_an_empty_password_is_refused_without_showing_the_file(self):
        """A file whose first line is blank holds no password."""
        self.write("etcd.password", b"\n  \n")

        error = self.refused("etcd_user = iway\netcd_password_file = etcd.password\n", "etcd_password_file")

        self.assertIn("no password", str(error))

    def test_a_missing_password_file_is_refused(self):
        """etcd_password_file naming no file: refused with the path tried."""
        error = self.refused("etcd_user = iway\netcd_password_file = nope\n", "etcd_password_file")

        self.assertIn(os.path.join(self.folder, "nope"), str(error))

    def test_a_user_with_a_space_is_refused(self):
        """etcd_user = a b is no user name."""
        self.write("etcd.password", b"s3cret\n")

        self.refused("etcd_user = a b\netcd_password_file = etcd.password\n", "etcd_user")
