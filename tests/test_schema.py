"""
The one table of configuration keys and what is made from it: the settings
classes' fields and the console's Backup Settings fields.
"""

from twisted.trial import unittest

from iwayfailover.config import (
    KEYS, ClientSettings, ConfigError, FailoverSettings, ListenerSettings, ServerSettings, schema,
)
from iwayfailover.config.values import SECONDS
from iwayfailover.console import settings as form

PATH = "/share/iway.ini"


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
        """The keys shown but not edited: heartbeat keys, users and the console's address."""
        self.assertEqual(form.READ_ONLY, {
            "failover": ("secret_file", "insecure", "console_users"), "server": ("console_users", "console"),
        })

    def test_a_field_is_checked_by_its_keys_kind(self):
        """A Threshold of "soon" is refused with the parser's own words."""
        [field] = [f for f in form.SERVER_FIELDS if f.key == "threshold"]
        error = self.assertRaises(ConfigError, field.check, PATH, "server:serv_a", "threshold", "soon")
        self.assertEqual(error.problem, "not a number")
