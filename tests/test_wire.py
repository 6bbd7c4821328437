"""
Heartbeat frames: the codec round-trips every valid frame, and refuses
everything else with a L{FrameError} and nothing but a L{FrameError}.
"""

import atexit
import shutil
import struct
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from twisted.trial import unittest

# Hypothesis keeps a cache folder; keep it out of the source tree and remove it after the run.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="iwayfailover-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)

from iwayfailover.wire import MAX_FRAME, Frame, FrameError, Kind, Role, decode, encode

U64_MAX = 2**64 - 1
HEADER_SIZE = 23


def frame(kind=Kind.HEARTBEAT, name="serv_a", role=Role.LIVE, epoch=3, seq=17):
    return Frame(kind=kind, name=name, role=role, epoch=epoch, seq=seq)


def body(magic=b"IW", version=1, kind=1, role=1, flags=0, epoch=3, seq=17, name=b"serv_a", namelen=None):
    """A frame body built field by field, so that any field can be wrong."""
    if namelen is None:
        namelen = len(name)
    return struct.pack("!2sBBBBQQB", magic, version, kind, role, flags, epoch, seq, namelen) + name


class EncodeTests(unittest.TestCase):
    """encode: the layout on the wire."""

    def test_encode_lays_out_every_field(self):
        """A frame is magic, version, kind, role, flags, epoch, seq, name length, name."""
        encoded = encode(frame(kind=Kind.ANSWER, name="serv_b", role=Role.BACKUP, epoch=258, seq=1))

        self.assertEqual(
            encoded,
            b"IW\x01\x02\x00\x00"
            + b"\x00\x00\x00\x00\x00\x00\x01\x02"
            + b"\x00\x00\x00\x00\x00\x00\x00\x01"
            + b"\x06serv_b",
        )

    def test_header_is_23_bytes(self):
        """The fixed part before the name is 23 bytes long."""
        self.assertEqual(len(encode(frame(name="a"))), HEADER_SIZE + 1)

    def test_largest_frame_fits_under_the_limit(self):
        """A frame with the longest name is not over MAX_FRAME."""
        self.assertLessEqual(len(encode(frame(name="n" * 64, epoch=U64_MAX, seq=U64_MAX))), MAX_FRAME)


class RoundTripTests(unittest.TestCase):
    """decode(encode(frame)) == frame for every valid frame."""

    def assertRoundTrips(self, original):
        decoded = decode(encode(original))

        self.assertEqual(decoded, original)
        return decoded

    def test_every_kind_and_role_round_trips(self):
        """Each of heartbeat/answer from backup/live decodes to the frame encoded."""
        for kind in Kind:
            for role in Role:
                self.assertRoundTrips(frame(kind=kind, role=role))

    def test_decoded_kind_and_role_are_enum_members(self):
        """decode gives Kind and Role members, not bare integers."""
        decoded = self.assertRoundTrips(frame(kind=Kind.ANSWER, role=Role.BACKUP))

        self.assertIs(decoded.kind, Kind.ANSWER)
        self.assertIs(decoded.role, Role.BACKUP)

    def test_one_character_name_round_trips(self):
        """The shortest name, one character, survives."""
        self.assertRoundTrips(frame(name="a"))

    def test_64_character_name_round_trips(self):
        """The longest name, 64 characters, survives."""
        self.assertRoundTrips(frame(name="a" + "b_.-9" * 12 + "xyz"))

    def test_epoch_and_seq_zero_round_trip(self):
        """epoch 0 and seq 0 survive."""
        self.assertRoundTrips(frame(epoch=0, seq=0))

    def test_epoch_and_seq_at_their_maximum_round_trip(self):
        """epoch and seq of 2**64 - 1 survive."""
        self.assertRoundTrips(frame(epoch=U64_MAX, seq=U64_MAX))

    def test_role_labels_are_lowercase_names(self):
        """Role.label is the word used by the status API: live or backup."""
        self.assertEqual((Role.LIVE.label, Role.BACKUP.label), ("live", "backup"))


class FrameValidationTests(unittest.TestCase):
    """A Frame cannot be built with values the wire cannot carry."""

    def test_empty_name_is_refused(self):
        """A frame needs a sender name."""
        self.assertRaises(FrameError, frame, name="")

    def test_65_character_name_is_refused(self):
        """A name longer than 64 characters is refused."""
        self.assertRaises(FrameError, frame, name="a" * 65)

    def test_non_ascii_name_is_refused(self):
        """A UTF-8 name outside the allowed ASCII characters is refused."""
        self.assertRaises(FrameError, frame, name="sérv")

    def test_negative_epoch_is_refused(self):
        """epoch -1 does not fit an unsigned field."""
        self.assertRaises(FrameError, frame, epoch=-1)

    def test_epoch_of_2_to_the_64_is_refused(self):
        """epoch 2**64 does not fit 8 bytes."""
        self.assertRaises(FrameError, frame, epoch=2**64)

    def test_seq_of_2_to_the_64_is_refused(self):
        """seq 2**64 does not fit 8 bytes."""
        self.assertRaises(FrameError, frame, seq=2**64)


class DecodeRefusalTests(unittest.TestCase):
    """decode refuses every body that is not a valid frame."""

    def test_the_reference_body_is_valid(self):
        """The body the other tests spoil decodes when left intact."""
        self.assertEqual(decode(body()), frame())

    def test_wrong_magic_is_refused(self):
        """A body not starting with IW is not a heartbeat frame."""
        error = self.assertRaises(FrameError, decode, body(magic=b"GE"))

        self.assertIn("not a heartbeat frame", str(error))

    def test_version_zero_is_refused(self):
        """Version 0 is not this version."""
        self.assertRaises(FrameError, decode, body(version=0))

    def test_newer_version_is_refused(self):
        """Version 2 is not understood by a version 1 node."""
        error = self.assertRaises(FrameError, decode, body(version=2))

        self.assertIn("version 2", str(error))

    def test_kind_zero_is_refused(self):
        """Kind 0 is unknown."""
        self.assertRaises(FrameError, decode, body(kind=0))

    def test_kind_five_is_refused(self):
        """Kind 5 is unknown (1 to 4 are heartbeat, answer, query, standing down)."""
        self.assertRaises(FrameError, decode, body(kind=5))

    def test_unknown_role_is_refused(self):
        """Role 3 is neither backup, live nor starting."""
        self.assertRaises(FrameError, decode, body(role=3))

    def test_lowest_reserved_flag_set_is_refused(self):
        """Reserved flag bit 0x02 must be clear (0x01 is the switchover flag)."""
        self.assertRaises(FrameError, decode, body(flags=0x02))

    def test_switchover_flag_round_trips(self):
        """The switchover flag of a standing-down frame survives encoding."""
        sent = Frame(kind=Kind.STANDING_DOWN, name="serv_a", role=Role.BACKUP, epoch=1, seq=2, flags=0x01)
        self.assertEqual(decode(encode(sent)), sent)

    def test_frame_with_unknown_flags_cannot_be_made(self):
        """A frame with a reserved flag is refused before it is ever sent."""
        self.assertRaises(FrameError, Frame, Kind.HEARTBEAT, "serv_a", Role.LIVE, 0, 1, 0x04)

    def test_highest_flag_set_is_refused(self):
        """Reserved flag bit 0x80 must be clear."""
        self.assertRaises(FrameError, decode, body(flags=0x80))

    def test_every_truncation_of_a_valid_frame_is_refused(self):
        """Each proper prefix of a valid frame, from 0 bytes up, raises FrameError."""
        whole = encode(frame(name="serv_a", epoch=U64_MAX, seq=U64_MAX))

        for length in range(len(whole)):
            self.assertRaises(FrameError, decode, whole[:length])

    def test_name_length_beyond_the_body_is_refused(self):
        """A name length larger than the bytes present is a truncated frame."""
        self.assertRaises(FrameError, decode, body(name=b"serv_a", namelen=7))

    def test_stray_bytes_after_the_name_are_refused(self):
        """Nothing may follow the name."""
        error = self.assertRaises(FrameError, decode, encode(frame()) + b"\x00")

        self.assertIn("stray", str(error))

    def test_body_over_max_frame_is_refused(self):
        """A body of MAX_FRAME + 1 bytes is refused as over the limit."""
        error = self.assertRaises(FrameError, decode, body() + b"x" * (MAX_FRAME + 1 - len(body())))

        self.assertIn("over the limit", str(error))

    def test_body_of_exactly_max_frame_is_not_refused_as_oversize(self):
        """A body of exactly MAX_FRAME bytes is judged on its content, not its size."""
        error = self.assertRaises(FrameError, decode, body() + b"x" * (MAX_FRAME - len(body())))

        self.assertNotIn("over the limit", str(error))

    def test_name_that_is_not_utf8_is_refused(self):
        """A name of bytes that are not UTF-8 is refused."""
        error = self.assertRaises(FrameError, decode, body(name=b"serv\xff"))

        self.assertIn("UTF-8", str(error))

    def test_empty_name_is_refused(self):
        """A name length of 0 is refused."""
        self.assertRaises(FrameError, decode, body(name=b""))

    def test_65_byte_name_is_refused(self):
        """A name of 65 allowed characters is refused."""
        self.assertRaises(FrameError, decode, body(name=b"a" * 65))

    def test_name_with_a_space_is_refused(self):
        """A name failing the name pattern (a space) is refused."""
        self.assertRaises(FrameError, decode, body(name=b"serv a"))

    def test_name_starting_with_a_dot_is_refused(self):
        """A name must start with a letter or digit."""
        self.assertRaises(FrameError, decode, body(name=b".serv"))

    def test_utf8_name_outside_the_pattern_is_refused(self):
        """Well-formed UTF-8 that the name pattern does not allow is refused."""
        self.assertRaises(FrameError, decode, body(name="sérv".encode("utf-8")))


NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NAMES = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_FIRST),
    st.text(alphabet=NAME_FIRST + "_.-", max_size=63),
)
FRAMES = st.builds(
    Frame,
    kind=st.sampled_from(Kind),
    name=NAMES,
    role=st.sampled_from(Role),
    epoch=st.integers(min_value=0, max_value=U64_MAX),
    seq=st.integers(min_value=0, max_value=U64_MAX),
)


@st.composite
def damaged_frames(draw):
    """A valid encoded frame with some bytes overwritten, cut or appended."""
    data = bytearray(encode(draw(FRAMES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[index] = draw(st.integers(min_value=0, max_value=255))
    data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    return bytes(data) + draw(st.binary(max_size=4))


def decodes_or_refuses(data):
    """Whether decode(data) gives a Frame or raises FrameError (any other exception escapes)."""
    try:
        return isinstance(decode(data), Frame)
    except FrameError:
        return True


class PropertyTests(unittest.TestCase):
    """Properties over generated inputs."""

    @settings(max_examples=500, deadline=None, database=None)
    @given(st.binary(max_size=MAX_FRAME + 8))
    def test_decode_of_any_bytes_gives_a_frame_or_frame_error(self, data):
        """Whatever the bytes, decode returns a Frame or raises FrameError, nothing else."""
        self.assertTrue(decodes_or_refuses(data))

    @settings(max_examples=500, deadline=None, database=None)
    @given(damaged_frames())
    def test_decode_of_damaged_frames_gives_a_frame_or_frame_error(self, data):
        """A valid frame with bytes changed, cut or added decodes or raises FrameError, nothing else."""
        self.assertTrue(decodes_or_refuses(data))

    @settings(max_examples=500, deadline=None, database=None)
    @given(FRAMES)
    def test_every_valid_frame_round_trips(self, original):
        """decode(encode(frame)) gives back the same frame."""
        self.assertEqual(decode(encode(original)), original)


class NameRegressionTests(unittest.TestCase):
    def test_a_name_ending_in_a_newline_is_refused(self):
        """A sender name with a trailing newline is not a valid frame (it would forge log lines)."""
        body = encode(Frame(kind=Kind.HEARTBEAT, name="serv_a", role=Role.LIVE, epoch=0, seq=1))
        forged = body[:-7] + bytes([7]) + b"serv_a\n"
        self.assertRaises(FrameError, decode, forged)
