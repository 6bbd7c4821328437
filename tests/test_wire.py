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

from iwayfailover.wire import (
    MAX_FRAME, PRIORITY_MAX, PRIORITY_MIN, THRESHOLD_MAX_MS, Frame, FrameError, Kind, Role, decode, encode, threshold_ms,
)

U64_MAX = 2**64 - 1
I32_MIN, I32_MAX, U32_MAX = -(2**31), 2**31 - 1, 2**32 - 1
HEADER_SIZE = 31


def frame(kind=Kind.HEARTBEAT, name="serv_a", role=Role.LIVE, epoch=3, seq=17, priority=5, threshold=2500):
    return Frame(kind=kind, name=name, role=role, epoch=epoch, seq=seq, priority=priority, threshold=threshold)


def body(magic=b"IW", version=2, kind=1, role=1, flags=0, epoch=3, seq=17, priority=5, threshold=2500, name=b"serv_a",
         namelen=None):
    """A frame body built field by field, so that any field can be wrong."""
    if namelen is None:
        namelen = len(name)
    return struct.pack("!2sBBBBQQiIB", magic, version, kind, role, flags, epoch, seq, priority, threshold, namelen) + name


def version_1_body(kind=1, role=1, flags=0, epoch=3, seq=17, name=b"serv_a"):
    """A frame body as iwayfailover 0.3.x sends it: frame version 1, without priority and threshold."""
    return struct.pack("!2sBBBBQQB", b"IW", 1, kind, role, flags, epoch, seq, len(name)) + name


class EncodeTests(unittest.TestCase):
    """encode: the layout on the wire."""

    def test_encode_lays_out_every_field(self):
        """A frame is magic, version 2, kind, role, flags, epoch, seq, priority, threshold, name length, name."""
        encoded = encode(
            frame(kind=Kind.ANSWER, name="serv_b", role=Role.BACKUP, epoch=258, seq=1, priority=-2, threshold=3000)
        )

        self.assertEqual(
            encoded,
            b"IW\x02\x02\x00\x00"
            + b"\x00\x00\x00\x00\x00\x00\x01\x02"
            + b"\x00\x00\x00\x00\x00\x00\x00\x01"
            + b"\xff\xff\xff\xfe"
            + b"\x00\x00\x0b\xb8"
            + b"\x06serv_b",
        )

    def test_header_is_31_bytes(self):
        """The fixed part before the name is 31 bytes long."""
        self.assertEqual(len(encode(frame(name="a"))), HEADER_SIZE + 1)

    def test_largest_frame_fits_under_the_limit(self):
        """A frame with the longest name and the widest values is not over MAX_FRAME."""
        largest = frame(name="n" * 64, epoch=U64_MAX, seq=U64_MAX, priority=I32_MIN, threshold=U32_MAX)

        self.assertLessEqual(len(encode(largest)), MAX_FRAME)

    def test_the_limits_are_those_of_the_fields(self):
        """A priority is a signed 32-bit field, a threshold an unsigned 32-bit one."""
        self.assertEqual((PRIORITY_MIN, PRIORITY_MAX, THRESHOLD_MAX_MS), (I32_MIN, I32_MAX, U32_MAX))


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

    def test_priority_and_threshold_round_trip(self):
        """The sender's priority and threshold come out as they went in."""
        decoded = self.assertRoundTrips(frame(priority=-7, threshold=1500))

        self.assertEqual((decoded.priority, decoded.threshold), (-7, 1500))

    def test_priority_at_both_ends_of_its_range_round_trips(self):
        """Priorities -2**31 and 2**31 - 1 survive."""
        self.assertRoundTrips(frame(priority=I32_MIN))
        self.assertRoundTrips(frame(priority=I32_MAX))

    def test_threshold_at_both_ends_of_its_range_round_trips(self):
        """Thresholds of 1 ms and 2**32 - 1 ms survive."""
        self.assertRoundTrips(frame(threshold=1))
        self.assertRoundTrips(frame(threshold=U32_MAX))

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

    def test_priority_below_the_signed_32_bit_range_is_refused(self):
        """priority -2**31 - 1 does not fit a signed 32-bit field, and the error says the range."""
        error = self.assertRaises(FrameError, frame, priority=I32_MIN - 1)

        self.assertIn(f"priority {I32_MIN - 1} out of range ({I32_MIN} to {I32_MAX})", str(error))

    def test_priority_above_the_signed_32_bit_range_is_refused(self):
        """priority 2**31 does not fit a signed 32-bit field."""
        self.assertRaises(FrameError, frame, priority=I32_MAX + 1)

    def test_threshold_of_0_ms_is_refused(self):
        """A threshold of 0 ms is no threshold (the configuration wants more than 0 s)."""
        error = self.assertRaises(FrameError, frame, threshold=0)

        self.assertIn("threshold 0 ms out of range", str(error))

    def test_threshold_of_2_to_the_32_ms_is_refused(self):
        """A threshold of 2**32 ms does not fit an unsigned 32-bit field."""
        self.assertRaises(FrameError, frame, threshold=U32_MAX + 1)

    def test_a_frame_without_priority_and_threshold_cannot_be_made(self):
        """Every frame announces its sender's priority and threshold: neither has a default."""
        self.assertRaises(TypeError, Frame, kind=Kind.HEARTBEAT, name="serv_a", role=Role.LIVE, epoch=0, seq=1)


class ThresholdTests(unittest.TestCase):
    """threshold_ms: a threshold in seconds as a frame carries it."""

    def test_seconds_become_whole_milliseconds(self):
        """2 s is 2000 ms; 0.3 s is 300 ms (no float residue); 1.2345 s rounds to 1234 or 1235 ms."""
        self.assertEqual((threshold_ms(2), threshold_ms(0.3)), (2000, 300))
        self.assertIn(threshold_ms(1.2345), (1234, 1235))

    def test_the_extremes_that_fit(self):
        """0.001 s and 4294967.295 s are the shortest and longest thresholds a frame carries."""
        self.assertEqual((threshold_ms(0.001), threshold_ms(4294967.295)), (1, U32_MAX))

    def test_a_threshold_that_rounds_to_0_ms_is_refused(self):
        """0.0004 s would be announced as 0 ms: refused, naming the range."""
        error = self.assertRaises(FrameError, threshold_ms, 0.0004)

        self.assertIn("0.001 to 4294967.295 s", str(error))

    def test_a_threshold_over_the_field_is_refused(self):
        """4294968 s does not fit in 32 bits of milliseconds."""
        self.assertRaises(FrameError, threshold_ms, 4294968)


class DecodeRefusalTests(unittest.TestCase):
    """decode refuses every body that is not a valid frame."""

    def test_the_reference_body_is_valid(self):
        """The body the other tests spoil decodes when left intact (priority 5, threshold 2500 ms)."""
        self.assertEqual(decode(body()), frame())

    def test_wrong_magic_is_refused(self):
        """A body not starting with IW is not a heartbeat frame."""
        error = self.assertRaises(FrameError, decode, body(magic=b"GE"))

        self.assertIn("not a heartbeat frame", str(error))

    def test_version_zero_is_refused(self):
        """Version 0 is not this version."""
        self.assertRaises(FrameError, decode, body(version=0))

    def test_newer_version_is_refused(self):
        """Version 3 is not understood by a version 2 node; the error names both versions."""
        error = self.assertRaises(FrameError, decode, body(version=3))

        self.assertIn("unsupported frame version 3 (this node speaks frame version 2)", str(error))

    def test_version_1_frames_of_older_nodes_are_refused_naming_both_versions(self):
        """A whole frame of iwayfailover 0.3.x (version 1) is refused as version 1, not as a truncated frame."""
        error = self.assertRaises(FrameError, decode, version_1_body())

        self.assertIn("frame version 1, from iwayfailover 0.3.x or older", str(error))
        self.assertIn("this node speaks frame version 2", str(error))
        self.assertIn("upgrade both nodes of the pair together", str(error))

    def test_a_version_1_frame_padded_to_a_version_2_size_is_still_refused(self):
        """A version 1 body long enough to parse as version 2 is still refused for its version."""
        error = self.assertRaises(FrameError, decode, version_1_body(name=b"serv_a" + b"x" * 20))

        self.assertIn("frame version 1", str(error))

    def test_threshold_of_0_ms_on_the_wire_is_refused(self):
        """A decoded threshold of 0 ms is refused."""
        error = self.assertRaises(FrameError, decode, body(threshold=0))

        self.assertIn("threshold of 0 ms", str(error))

    def test_negative_priority_on_the_wire_is_read_as_signed(self):
        """Priority bytes ff ff ff ff are priority -1, not 4294967295."""
        self.assertEqual(decode(body(priority=-1)).priority, -1)

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
        sent = Frame(
            kind=Kind.STANDING_DOWN, name="serv_a", role=Role.BACKUP, epoch=1, seq=2, priority=0, threshold=1000, flags=0x01,
        )
        self.assertEqual(decode(encode(sent)), sent)

    def test_frame_with_unknown_flags_cannot_be_made(self):
        """A frame with a reserved flag is refused before it is ever sent."""
        self.assertRaises(FrameError, Frame, Kind.HEARTBEAT, "serv_a", Role.LIVE, 0, 1, 0, 1000, 0x04)

    def test_highest_flag_set_is_refused(self):
        """Reserved flag bit 0x80 must be clear."""
        self.assertRaises(FrameError, decode, body(flags=0x80))

    def test_every_truncation_of_a_valid_frame_is_refused(self):
        """Each proper prefix of a valid frame, from 0 bytes up, raises FrameError."""
        whole = encode(frame(name="serv_a", epoch=U64_MAX, seq=U64_MAX, priority=I32_MIN, threshold=U32_MAX))

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
    priority=st.integers(min_value=I32_MIN, max_value=I32_MAX),
    threshold=st.integers(min_value=1, max_value=U32_MAX),
    flags=st.sampled_from([0, 1]),
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

    @settings(max_examples=300, deadline=None, database=None)
    @given(FRAMES)
    def test_every_version_1_frame_is_refused_for_its_version(self, original):
        """Whatever a 0.3.x node says in a version 1 frame, it is refused, and the error names version 1."""
        name = original.name.encode("utf-8")
        old = version_1_body(original.kind, original.role, original.flags, original.epoch, original.seq, name)

        error = self.assertRaises(FrameError, decode, old)

        self.assertIn("frame version 1", str(error))


class NameRegressionTests(unittest.TestCase):
    def test_a_name_ending_in_a_newline_is_refused(self):
        """A sender name with a trailing newline is not a valid frame (it would forge log lines)."""
        body = encode(frame(name="serv_a", epoch=0, seq=1))
        forged = body[:-7] + bytes([7]) + b"serv_a\n"
        self.assertRaises(FrameError, decode, forged)
