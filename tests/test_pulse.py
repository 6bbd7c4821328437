"""
Tests for L{iwayfailover.pulse}: heartbeat frames as sealed datagrams, bound
to the heartbeat connection whose keys seal them.
"""

import os
import unittest

from iwayfailover import auth, wire
from iwayfailover.pulse import MAX_PULSE, MAX_SESSIONS, OVERHEAD, PulseBook, PulseError, PulseKeys, decode

KEY = b"k" * 32
OTHER = b"o" * 32


def connection(client_ring=None, server_ring=None):
    """Both sides' sessions of one heartbeat connection (fresh nonces)."""
    client_ring = client_ring or auth.KeyRing(keys=(KEY,))
    server_ring = server_ring or auth.KeyRing(keys=(KEY,))
    client_nonce, server_nonce = os.urandom(16), os.urandom(16)
    return (auth.Session(client_ring, True, client_nonce, server_nonce),
            auth.Session(server_ring, False, server_nonce, client_nonce))


def frame(seq=1, name="serv_a"):
    return wire.encode(wire.Frame(wire.Kind.HEARTBEAT, name, wire.Role.LIVE, 3, seq, priority=0, threshold=150))


class PulseTests(unittest.TestCase):
    def setUp(self):
        client, server = connection()
        self.live = PulseKeys.from_session(client)
        self.backup = PulseKeys.from_session(server)
        self.book = PulseBook()
        self.book.add(self.backup)

    def test_a_pulse_carries_its_frame_to_the_other_side(self):
        keys, body = self.book.open(self.live.seal(frame(7)))
        self.assertIs(keys, self.backup)
        self.assertEqual(wire.decode(body).seq, 7)

    def test_both_sides_name_the_session_alike_and_each_connection_differently(self):
        self.assertEqual(self.live.id, self.backup.id)
        other, _ = connection()
        self.assertNotEqual(PulseKeys.from_session(other).id, self.live.id)

    def test_a_pulse_again_or_a_little_late_is_a_duplicate_and_an_old_one_a_replay(self):
        """
        A pulse taken already, again (its copy sent to the second address, by a slower way), or one a
        little behind the newest: a duplicate, never taken, dropped quietly; one more than 64 behind:
        refused as replayed.
        """
        from iwayfailover.pulse import LATE_WINDOW, PulseDuplicate

        pulses = [self.live.seal(frame(n)) for n in range(1, LATE_WINDOW + 3)]
        self.book.open(pulses[0])
        self.book.open(pulses[1])
        for pulse in (pulses[1], pulses[0]):
            with self.assertRaises(PulseDuplicate):
                self.book.open(pulse)
        for pulse in pulses[2:]:
            self.book.open(pulse)
        with self.assertRaises(PulseDuplicate):
            self.book.open(pulses[2])  # 64 behind the newest (66)
        with self.assertRaisesRegex(PulseError, "replayed") as caught:
            self.book.open(pulses[1])  # 65 behind
        self.assertNotIsInstance(caught.exception, PulseDuplicate)

    def test_numbers_may_skip_but_an_older_one_after_a_newer_is_never_taken(self):
        """Pulse 1 lost, 2 and 3 arrive (accepted); 1 arriving late is not taken (an older pulse is no fresher signal)."""
        first, second, third = (self.live.seal(frame(n)) for n in (1, 2, 3))
        self.book.open(second)
        self.book.open(third)
        with self.assertRaisesRegex(PulseError, "newest taken is 3"):
            self.book.open(first)

    def test_a_pulse_sent_back_the_other_way_is_refused(self):
        """The backup's own pulse, reflected to it: the direction differs, so the MAC does."""
        reflected = self.backup.seal(frame())
        with self.assertRaisesRegex(PulseError, "bad MAC"):
            self.book.open(reflected)

    def test_a_pulse_of_another_connection_is_refused(self):
        """A pulse recorded on an earlier connection (other nonces): no such session held."""
        old, _ = connection()
        with self.assertRaisesRegex(PulseError, "does not hold"):
            self.book.open(PulseKeys.from_session(old).seal(frame()))

    def test_a_pulse_sealed_without_the_key_is_refused(self):
        """Same nonces, another key: the session id matches (it is public) but the MAC does not."""
        client, server = connection(client_ring=auth.KeyRing(keys=(OTHER,)))
        book = PulseBook()
        book.add(PulseKeys.from_session(server))
        with self.assertRaisesRegex(PulseError, "bad MAC"):
            book.open(PulseKeys.from_session(client).seal(frame()))

    def test_a_key_held_second_is_accepted_during_a_rotation(self):
        """The live signs with its new key; the backup still signs with the old one but holds both."""
        client, server = connection(client_ring=auth.KeyRing(keys=(OTHER, KEY)), server_ring=auth.KeyRing(keys=(KEY, OTHER)))
        book = PulseBook()
        book.add(PulseKeys.from_session(server))
        _, body = book.open(PulseKeys.from_session(client).seal(frame(4)))
        self.assertEqual(wire.decode(body).seq, 4)

    def test_every_changed_byte_is_refused(self):
        """Any one bit flipped anywhere in a pulse: refused (by its size, magic, version, session, number or MAC)."""
        client, server = connection()
        pulse = PulseKeys.from_session(client).seal(frame())
        for i in range(len(pulse)):
            changed = bytearray(pulse)
            changed[i] ^= 0x01
            book = PulseBook()
            book.add(PulseKeys.from_session(server))  # fresh: nothing accepted yet on it
            with self.assertRaises(PulseError, msg=f"byte {i}"):
                book.open(bytes(changed))

    def test_sizes_outside_a_pulse_are_refused_before_any_mac(self):
        with self.assertRaisesRegex(PulseError, "too short"):
            decode(b"IWP\x01" + b"\x00" * (OVERHEAD - 4))
        with self.assertRaisesRegex(PulseError, "over the limit"):
            decode(b"IWP\x01" + b"\x00" * MAX_PULSE)
        with self.assertRaisesRegex(PulseError, "not a pulse"):
            decode(b"GET / HTTP/1.1\r\n" + b"\x00" * OVERHEAD)
        with self.assertRaisesRegex(PulseError, "version 9"):
            decode(b"IWP\x09" + b"\x00" * OVERHEAD)

    def test_random_bytes_raise_only_pulse_errors(self):
        for _ in range(2000):
            data = os.urandom(int.from_bytes(os.urandom(2), "big") % (MAX_PULSE + 40))
            if data[:3] != b"IWP" and len(data) > 4 and os.urandom(1)[0] % 2:
                data = b"IWP\x01" + data[4:]
            try:
                self.book.open(data)
            except PulseError:
                pass

    def test_the_book_holds_the_newest_sessions_only(self):
        book = PulseBook()
        sessions = [PulseKeys.from_session(connection()[1]) for _ in range(MAX_SESSIONS + 3)]
        for keys in sessions:
            book.add(keys)
        self.assertEqual(len(book), MAX_SESSIONS)
        self.assertIsNone(book.get(sessions[0].id))
        self.assertIs(book.get(sessions[-1].id), sessions[-1])
        book.forget(sessions[-1])
        self.assertIsNone(book.get(sessions[-1].id))
