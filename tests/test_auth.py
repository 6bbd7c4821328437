"""
The heartbeat keys and sessions: key files, their permissions, key ids,
and the seal every frame carries.
"""

import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from harness import temporary_directory
from iwayfailover import auth
from iwayfailover.config import ConfigError, parse_config

KEY = b"0123456789abcdef0123456789abcdef"
SERVER = "[server:serv_a]\nbackup_location = 192.0.2.2:1200\nheartbeat_port = 1200\nthreshold = 3\n"


def pair(client_ring, server_ring=None):
    """A connecting and an accepting session over the same two nonces."""
    client_nonce, server_nonce = os.urandom(16), os.urandom(16)
    client = auth.Session(client_ring, True, client_nonce, server_nonce)
    server = auth.Session(server_ring or client_ring, False, server_nonce, client_nonce)
    return client, server


class KeyFileTests(unittest.TestCase):
    def test_one_key_per_line_the_first_signs(self):
        """Lines are keys in order; blank lines and # comments are skipped."""
        ring = auth.parse_key_file(b"# rotated 2026-11\n" + KEY + b"\n\n" + KEY.upper() + b"\n", "/k")
        self.assertEqual(ring.keys, (KEY, KEY.upper()))
        self.assertEqual(ring.source, "/k")
        self.assertFalse(ring.insecure)

    def test_an_empty_file_is_refused_naming_keygen(self):
        """A file with no key says so and how to make one."""
        error = self.assertRaises(auth.KeyFileError, auth.parse_key_file, b"\n# nothing\n", "/k")
        self.assertIn("no key", str(error))
        self.assertIn("iwsrv keygen", str(error))

    def test_a_short_key_is_refused_naming_its_line_and_length_not_its_text(self):
        """A password-like key is refused; the message gives its line and length, never the key."""
        error = self.assertRaises(auth.KeyFileError, auth.parse_key_file, KEY + b"\nsecret123\n", "/k")
        self.assertIn("line 2", str(error))
        self.assertIn("9 characters", str(error))
        self.assertNotIn("secret123", str(error))

    def test_binary_is_refused(self):
        """A file that is not UTF-8 text is refused."""
        self.assertRaises(auth.KeyFileError, auth.parse_key_file, b"\xff" * 40, "/k")

    def test_too_many_keys_are_refused(self):
        """More than MAX_KEYS lines of keys is refused."""
        data = b"\n".join(KEY + bytes([65 + i]) for i in range(auth.MAX_KEYS + 1))
        self.assertRaises(auth.KeyFileError, auth.parse_key_file, data, "/k")

    def test_an_unreadable_path_is_refused_with_the_reason(self):
        """A missing file is refused with the system's reason."""
        error = self.assertRaises(auth.KeyFileError, auth.read_key_file, "/nonexistent/failover.key")
        self.assertIn("No such file", str(error))

    def test_key_ids_are_stable_short_and_not_the_key(self):
        """A key id is 12 hex digits, the same for the same key, different for another, and not part of the key."""
        a = auth.KeyRing(keys=(KEY,))
        self.assertEqual(a.key_ids, auth.KeyRing(keys=(KEY,)).key_ids)
        self.assertNotEqual(a.key_ids, auth.KeyRing(keys=(KEY.upper(),)).key_ids)
        self.assertEqual(len(a.key_ids[0]), 12)
        self.assertNotIn(a.key_ids[0].encode(), KEY)

    def test_the_ring_repr_and_status_hold_no_key(self):
        """Neither repr() nor status() of a ring shows a key."""
        ring = auth.KeyRing(keys=(KEY,), source="/k")
        self.assertNotIn(KEY.decode(), repr(ring))
        self.assertNotIn(KEY.decode(), str(ring.status()))
        self.assertEqual(ring.status(), {"mode": "hmac-sha256", "key_file": "/k", "key_ids": list(ring.key_ids)})

    def test_an_unsigned_ring_says_insecure(self):
        """The ring of insecure = true reports itself as such."""
        self.assertEqual(auth.KeyRing.unsigned().status(), {"mode": "insecure", "key_file": None, "key_ids": []})


class KeygenTests(unittest.TestCase):
    def test_a_new_key_file_is_private_and_holds_a_long_random_key(self):
        """The file is mode 0600 whatever the umask, and holds 64 hex digits that parse as a key."""
        path = os.path.join(temporary_directory(self), "failover.key")
        old = os.umask(0)
        try:
            auth.write_new_key_file(path)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        ring = auth.read_key_file(path)
        self.assertEqual(len(ring.keys[0]), 64)
        int(ring.keys[0], 16)

    def test_two_new_keys_differ(self):
        """Each key is new."""
        self.assertNotEqual(auth.new_key(), auth.new_key())

    def test_an_existing_file_is_never_replaced(self):
        """Writing over an existing key file fails and leaves it as it was."""
        path = os.path.join(temporary_directory(self), "failover.key")
        with open(path, "wb") as f:
            f.write(KEY)
        self.assertRaises(FileExistsError, auth.write_new_key_file, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), KEY)


class ExposureTests(unittest.TestCase):
    def exposure_of(self, mode):
        path = os.path.join(temporary_directory(self), "failover.key")
        with open(path, "wb") as f:
            f.write(KEY)
        os.chmod(path, mode)
        return auth.exposure(path)

    def test_owner_only_is_fine(self):
        """0600 and 0400 are not exposed."""
        self.assertIsNone(self.exposure_of(0o600))
        self.assertIsNone(self.exposure_of(0o400))

    def test_readable_by_every_user_is_exposed(self):
        """0644 is exposed; the message says who can read it and how to fix it."""
        problem = self.exposure_of(0o644)
        self.assertIn("every user can read it", problem)
        self.assertIn("chmod 600", problem)

    def test_readable_by_the_group_is_exposed(self):
        """0640 is exposed to the group."""
        self.assertIn("its group can read it", self.exposure_of(0o640))

    def test_writable_by_others_is_exposed(self):
        """0602 lets others change it."""
        self.assertIn("others can change it", self.exposure_of(0o602))


class LoadKeysTests(unittest.TestCase):
    def setUp(self):
        self.folder = temporary_directory(self)
        self.path = os.path.join(self.folder, "iway.ini")

    def test_no_key_and_no_insecure_is_a_config_error(self):
        """Neither secret_file nor insecure: an error naming [failover] secret_file and both ways out."""
        error = self.assertRaises(ConfigError, auth.load_keys, parse_config(SERVER, self.path))
        self.assertEqual((error.section, error.key), ("failover", "secret_file"))
        self.assertIn("iwsrv keygen", str(error))
        self.assertIn("insecure = true", str(error))

    def test_insecure_gives_an_unsigned_ring(self):
        """insecure = true: the unsigned ring."""
        ring = auth.load_keys(parse_config("[failover]\ninsecure = true\n" + SERVER, self.path))
        self.assertTrue(ring.insecure)

    def test_insecure_false_still_needs_a_key(self):
        """insecure = false is no way around the key."""
        self.assertRaises(ConfigError, auth.load_keys, parse_config("[failover]\ninsecure = no\n" + SERVER, self.path))

    def test_a_key_file_gives_its_keys(self):
        """secret_file's keys are read."""
        auth.write_new_key_file(os.path.join(self.folder, "failover.key"))
        ring = auth.load_keys(parse_config("[failover]\nsecret_file = failover.key\n" + SERVER, self.path))
        self.assertEqual(ring.source, os.path.join(self.folder, "failover.key"))

    def test_a_bad_key_file_is_a_config_error_naming_the_key(self):
        """An unusable key file is reported as [failover] secret_file, with the reason."""
        with open(os.path.join(self.folder, "failover.key"), "w") as f:
            f.write("short\n")
        error = self.assertRaises(
            ConfigError, auth.load_keys, parse_config("[failover]\nsecret_file = failover.key\n" + SERVER, self.path)
        )
        self.assertEqual(error.key, "secret_file")
        self.assertIn("5 characters", str(error))

    def test_insecure_with_a_key_is_contradictory(self):
        """secret_file and insecure = true together are refused by the parser."""
        auth.write_new_key_file(os.path.join(self.folder, "failover.key"))
        error = self.assertRaises(
            ConfigError, parse_config, "[failover]\nsecret_file = failover.key\ninsecure = true\n" + SERVER, self.path
        )
        self.assertEqual(error.key, "insecure")


class SessionTests(unittest.TestCase):
    def test_a_sealed_frame_opens_on_the_other_side_both_ways(self):
        """Client to server and server to client, the body comes out as it went in."""
        client, server = pair(auth.KeyRing(keys=(KEY,)))
        self.assertEqual(server.open(client.seal(b"heartbeat")), b"heartbeat")
        self.assertEqual(client.open(server.seal(b"answer")), b"answer")

    def test_numbers_count_up_from_one_each_way(self):
        """Each side numbers its own frames 1, 2, 3..."""
        client, server = pair(auth.KeyRing(keys=(KEY,)))
        for n in range(1, 4):
            sealed = client.seal(b"x")
            self.assertEqual(int.from_bytes(sealed[:8], "big"), n)
            server.open(sealed)
        self.assertEqual(server.received, 3)

    def test_a_skipped_frame_is_out_of_order(self):
        """Frame 2 arriving after frame 0 (1 lost or held back) is refused."""
        client, server = pair(auth.KeyRing(keys=(KEY,)))
        client.seal(b"one")
        error = self.assertRaises(auth.AuthError, server.open, client.seal(b"two"))
        self.assertIn("out of order", str(error))

    def test_the_seal_depends_on_both_nonces(self):
        """The same body sealed on two connections differs (so neither can be replayed on the other)."""
        a, _ = pair(auth.KeyRing(keys=(KEY,)))
        b, _ = pair(auth.KeyRing(keys=(KEY,)))
        self.assertNotEqual(a.seal(b"x"), b.seal(b"x"))

    def test_a_peer_signing_with_the_second_key_is_accepted_for_every_frame(self):
        """A peer that still signs with the old key (second in this ring) is accepted frame after frame."""
        old, new = KEY, KEY.upper()
        client, server = pair(auth.KeyRing(keys=(old,)), auth.KeyRing(keys=(new, old)))
        server.open(client.seal(b"x"))
        self.assertEqual(server.open(client.seal(b"y")), b"y")


class FuzzTests(unittest.TestCase):
    """Any bytes given to the hello parser or to a session give a value or an AuthError, nothing else."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64))
    def test_any_hello_bytes(self, data):
        try:
            nonce = auth.parse_hello(data)
        except auth.AuthError as e:
            self.assertTrue(str(e))
        else:
            self.assertEqual(len(nonce), auth.NONCE_SIZE)
            self.assertEqual(auth.hello(nonce), data)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_any_sealed_bytes(self, data):
        _, server = pair(auth.KeyRing(keys=(KEY,)))
        try:
            server.open(data)
        except auth.AuthError:
            pass
        else:
            self.fail(f"unsigned bytes {data!r} were accepted")
        self.assertEqual(server.received, 0)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_a_sealed_frame_with_any_one_byte_changed_is_refused(self, data):
        client, server = pair(auth.KeyRing(keys=(KEY,)))
        sealed = bytearray(client.seal(data.draw(st.binary(min_size=1, max_size=256))))
        where = data.draw(st.integers(0, len(sealed) - 1))
        sealed[where] ^= data.draw(st.integers(1, 255))
        self.assertRaises(auth.AuthError, server.open, bytes(sealed))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=2000))
    def test_any_key_file_bytes_give_keys_or_a_key_file_error(self, data):
        try:
            ring = auth.parse_key_file(data, "/share/failover.key")
        except auth.KeyFileError as e:
            self.assertTrue(str(e))
        else:
            self.assertTrue(1 <= len(ring.keys) <= auth.MAX_KEYS)
            self.assertTrue(all(len(k) >= auth.MIN_KEY_LENGTH for k in ring.keys))
