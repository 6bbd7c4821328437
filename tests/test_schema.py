"""
The one table of configuration keys and what is made from it: the settings
classes' fields, the reload's list of changed keys, the console's Backup
Settings fields and the key reference docs/configuration.md.
"""

import os

from twisted.trial import unittest

from iwayfailover.config import (
    KEYS, ClientSettings, ConfigError, FailoverSettings, ListenerSettings, ServerSettings, changed_keys, parse_config,
    schema,
)
from iwayfailover.config import reference
from iwayfailover.config.values import SECONDS
from iwayfailover.console import settings as form

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "/share/iway.ini"

CONFIG = """\
[failover]
heartbeat_interval = 0.5

[server:serv_a]
backup_location = 10.9.9.2:1200
heartbeat_port = 1200
threshold = 2

[server:serv_b]
backup_location = 10.9.9.1:1200
heartbeat_port = 1200
threshold = 2

[listener:web]
plugin = web --listen tcp:8080

[listener:only_a]
plugin = web --listen tcp:8081
servers = serv_a
"""


def changed(text, server=None):
    """The changed-key lines from CONFIG to C{text}."""
    return changed_keys(parse_config(CONFIG, PATH), parse_config(text, PATH), server)


class TableTests(unittest.TestCase):
    """The table itself: every row consistent with what is made from it."""

    def test_every_default_shown_is_a_value_the_parser_takes(self):
        """The default the reference and the form show (1, 30, true, ...) parses back to the table's default."""
        checked = 0
        for key in KEYS:
            if key.required or key.default is None or key.default == ():
                continue
            self.assertEqual(key.kind(PATH, "failover", key.name, key.default_text), key.default, key.name)
            checked += 1
        self.assertGreater(checked, 5)

    def test_settings_classes_have_a_field_with_the_default_of_each_key(self):
        """Each stored key is a field of its section's settings class, defaulting to the table's default."""
        classes = {"failover": FailoverSettings, "server": ServerSettings, "listener": ListenerSettings}
        for key in KEYS:
            if not key.stored:
                continue
            if key.group == schema.CLIENT:  # None: not set in this section, [failover]'s or the default applies
                self.assertIsNone(ClientSettings.__dataclass_fields__[key.name].default, key.name)
                continue
            for kind in key.sections:
                field = classes[kind].__dataclass_fields__[key.name]
                if not key.required:
                    self.assertEqual(field.default, key.default, f"{kind} {key.name}")

    def test_a_key_added_to_a_table_becomes_a_field(self):
        """settings_fields gives a class a field for each key it is given: adding a key to the table is one line."""
        extra = schema.Key("grace", schema.FAILOVER, SECONDS, 2.5, "seconds of grace")

        @schema.settings_fields([extra])
        class Settings:
            name: str

        self.assertEqual(Settings(name="x").grace, 2.5)
        self.assertEqual(Settings(name="x", grace=4.0).grace, 4.0)

    def test_required_keys_are_required_by_the_settings_class(self):
        """A server's settings cannot be made without its required keys."""
        self.assertRaises(TypeError, ServerSettings, name="serv_a")


class ChangedKeysTests(unittest.TestCase):
    """changed_keys: the keys a reload changed, as "[section] key old -> new"."""

    def test_no_change_gives_no_lines(self):
        """The same file gives an empty list."""
        self.assertEqual(changed(CONFIG), [])

    def test_a_changed_value_is_one_line_with_old_and_new(self):
        """threshold 2 -> 5 in serv_b's section is one line, shown as the file has it."""
        text = CONFIG.replace("threshold = 2\n\n[listener:web]", "threshold = 5\n\n[listener:web]")
        self.assertEqual(changed(text), ["[server:serv_b] threshold 2 -> 5"])

    def test_a_key_added_shows_the_default_it_replaces(self):
        """witness added to [failover]: none -> the address; self_fence set to its default: no line."""
        text = CONFIG.replace("heartbeat_interval = 0.5\n", "heartbeat_interval = 0.25\nwitness = 10.0.0.9:22\nself_fence = yes\n")
        self.assertEqual(changed(text), [
            "[failover] heartbeat_interval 0.5 -> 0.25", "[failover] witness none -> 10.0.0.9:22",
        ])

    def test_a_listener_added_or_removed_shows_its_plugin_line(self):
        """A listener section added: its plugin line from none; one removed: to none."""
        added = changed(CONFIG + "\n[listener:extra]\nplugin = web --listen tcp:9000\n")
        self.assertEqual(added, ["[listener:extra] plugin none -> web --listen tcp:9000"])
        removed = changed(CONFIG.replace("[listener:web]\nplugin = web --listen tcp:8080\n", ""))
        self.assertEqual(removed, ["[listener:web] plugin web --listen tcp:8080 -> none"])

    def test_for_one_server_only_what_it_reads(self):
        """For serv_b: not serv_a's section, nor a listener that runs only on serv_a."""
        text = CONFIG.replace("threshold = 2\n\n[server:serv_b]", "threshold = 3\n\n[server:serv_b]").replace(
            "tcp:8081", "tcp:8082")
        self.assertEqual(len(changed(text)), 2)
        self.assertEqual(changed(text, "serv_b"), [])
        self.assertEqual(changed(text, "serv_a"), [
            "[server:serv_a] threshold 2 -> 3", "[listener:only_a] plugin web --listen tcp:8081 -> web --listen tcp:8082",
        ])

    def test_a_listener_moved_off_a_server_is_listed_for_it(self):
        """A listener whose servers no longer name this server is listed for it, with the servers change."""
        text = CONFIG.replace("servers = serv_a", "servers = serv_b")
        self.assertEqual(changed(text, "serv_a"), ["[listener:only_a] servers serv_a -> serv_b"])

    def test_a_key_a_server_inherits_shows_as_failovers(self):
        """A hook set in a server's own section, where it was [failover]'s before."""
        text = CONFIG.replace("threshold = 2\n\n[server:serv_b]", "threshold = 2\non_live = /bin/notify live\n\n[server:serv_b]")
        self.assertEqual(changed(text, "serv_a"), ["[server:serv_a] on_live [failover]'s -> /bin/notify live"])


class FormTests(unittest.TestCase):
    """The console's Backup Settings fields come from the table."""

    def test_the_form_edits_the_keys_with_a_label(self):
        """Each labelled key of a section is a field, with the table's label, check and default."""
        for kind, fields in (("server", form.SERVER_FIELDS), ("failover", form.FAILOVER_FIELDS)):
            labelled = [key for key in schema.keys_of(kind) if key.label]
            self.assertEqual([f.key for f in fields], [key.name for key in labelled])
            for field, key in zip(fields, labelled):
                self.assertEqual((field.label, field.check, field.help), (key.label, key.kind, key.help))
                self.assertEqual(field.default, "" if key.required else key.default_text)
        self.assertEqual([f.label for f in form.SERVER_FIELDS[:3]], ["Location of Backup", "Heartbeat Port", "Threshold"])

    def test_heartbeat_port_hint_says_it_listens_in_both_roles(self):
        """The Heartbeat Port is listened on whatever the role: its hint says so, not "when backup"."""
        [field] = [f for f in form.SERVER_FIELDS if f.key == "heartbeat_port"]
        self.assertIn("both roles", field.help)
        self.assertNotIn("when backup", field.help)

    def test_keys_shown_read_only_are_the_tables(self):
        """The keys shown but not edited: the coordinator and etcd's, heartbeat keys, users and the console's address."""
        self.assertEqual(form.READ_ONLY, {
            "failover": (
                "coordinator", "secret_file", "insecure", "etcd_endpoints", "etcd_prefix", "etcd_cacert", "etcd_cert",
                "etcd_key", "etcd_user", "etcd_password_file", "console_users",
            ),
            "server": ("console_users", "console"),
        })

    def test_a_field_is_checked_by_its_keys_kind(self):
        """A Threshold of "soon" is refused with the parser's own words."""
        [field] = [f for f in form.SERVER_FIELDS if f.key == "threshold"]
        error = self.assertRaises(ConfigError, field.check, PATH, "server:serv_a", "threshold", "soon")
        self.assertEqual(error.problem, "not a number")


class ReferenceTests(unittest.TestCase):
    """docs/configuration.md, written from the table."""

    def test_the_reference_in_the_source_tree_is_up_to_date(self):
        """docs/configuration.md is what `make docs` writes now; run it after changing the table."""
        with open(os.path.join(SOURCE_TREE, "docs", "configuration.md"), encoding="utf-8") as f:
            written = f.read()
        self.assertEqual(written, reference.render(), "docs/configuration.md is out of date: run `make docs`")

    def test_every_key_is_in_the_reference_with_its_default(self):
        """Each key of the table has a row naming it, its meaning and its default, under its section."""
        text = reference.render()
        for key in KEYS:
            row = next(line for line in text.splitlines() if line.startswith(f"| `{key.name}` |"))
            self.assertIn(key.help, row)
            self.assertIn(f"| {key.default_text} |", row)
        for title in ("## [failover]", "## [server:NAME]", "## [listener:NAME]"):
            self.assertIn(title, text)
