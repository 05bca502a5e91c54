"""Value and command codec: exact round trips, clear refusals."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from hypothesis import given, strategies as st

from hastate.state.codec import Command, check_key, decode_value, encode_value

aware = st.datetimes(timezones=st.sampled_from(
    [dt.timezone.utc, dt.timezone(dt.timedelta(hours=9)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]))
naive = st.datetimes()   # what datetime.now() returns: no tzinfo, fold 0 or 1
decimals = st.decimals(allow_nan=False, allow_infinity=True)
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) |
           st.floats(allow_nan=False) | st.text() | st.binary() | aware | naive | decimals)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


class TestValues:
    @given(values)
    def test_round_trip_is_exact(self, value: object) -> None:
        assert decode_value(encode_value("k", value)) == value

    @given(aware)
    def test_datetime_keeps_instant_and_offset(self, value: dt.datetime) -> None:
        back = decode_value(encode_value("ts", value))
        assert back == value and back.utcoffset() == value.utcoffset()

    @given(decimals)
    def test_decimal_keeps_every_digit(self, value: decimal.Decimal) -> None:
        back = decode_value(encode_value("price", value))
        assert str(back) == str(value)

    def test_tuples_come_back_as_lists(self) -> None:
        assert decode_value(encode_value("t", (1, (2, 3)))) == [1, [2, 3]]

    @given(naive)
    def test_naive_datetime_stays_naive_with_every_field(self, value: dt.datetime) -> None:
        back = decode_value(encode_value("ts", value))
        assert back.tzinfo is None
        assert (back.isoformat(), back.fold) == (value.isoformat(), value.fold)

    @given(naive, st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=9))]))
    def test_naive_and_aware_with_the_same_digits_stay_distinct(
            self, value: dt.datetime, tz: dt.timezone) -> None:
        aware_value = value.replace(tzinfo=tz)
        assert encode_value("ts", value) != encode_value("ts", aware_value)
        assert decode_value(encode_value("ts", aware_value)).utcoffset() == tz.utcoffset(None)

    def test_datetime_now_round_trips_exactly(self) -> None:
        now = dt.datetime.now()
        back = decode_value(encode_value("last_processed_timestamp", now))
        assert back == now and back.tzinfo is None and back.microsecond == now.microsecond

    def test_values_written_before_naive_support_still_decode(self) -> None:
        import msgpack
        old = msgpack.packb(msgpack.ExtType(1, b"2026-01-01T09:00:00.000123+09:00"))
        back = decode_value(old)
        assert back == dt.datetime(2026, 1, 1, 0, 0, 0, 123, tzinfo=dt.timezone.utc)
        assert back.utcoffset() == dt.timedelta(hours=9)

    def test_unencodable_value_names_the_path_and_type(self) -> None:
        with pytest.raises(TypeError, match=r"'positions'\[1\]\['qty'\].*set"):
            encode_value("positions", [{"qty": 1}, {"qty": {1, 2}}])

    def test_too_large_int_names_the_fix(self) -> None:
        with pytest.raises(TypeError, match="64 bits.*Decimal"):
            encode_value("n", 2**70)

    @pytest.mark.parametrize("key", [1, b"x", None])
    def test_non_str_keys_refused(self, key: object) -> None:
        with pytest.raises(TypeError, match="keys must be str"):
            check_key(key)

    def test_empty_key_refused(self) -> None:
        with pytest.raises(ValueError):
            check_key("")


class TestCommand:
    @given(st.sampled_from(Command.OPS), st.binary(max_size=16), st.integers(0, 2**63),
           st.dictionaries(st.text(min_size=1), st.binary(), max_size=3),
           st.lists(st.text(min_size=1), max_size=3),
           st.dictionaries(st.text(min_size=1), st.integers(0, 2**40), max_size=3))
    def test_round_trip(self, op, client, seq, vals, keys, expected) -> None:
        cmd = Command(op=op, client=client, seq=seq, values=vals, keys=tuple(keys),
                      expected=expected)
        assert Command.decode(cmd.encode()) == cmd

    def test_meta_and_txn_trail_the_envelope(self) -> None:
        cmd = Command(op="txn", client=b"c", seq=3, meta={"traceparent": "00-ab-cd-01"},
                      txn={"compare": [], "success": [["get", "k"]], "failure": []})
        back = Command.decode(cmd.encode())
        assert back == cmd and not back.legacy

    def test_a_seven_field_command_of_the_first_format_still_decodes(self) -> None:
        import msgpack
        raw = msgpack.packb([1, "update", b"c", 5, {"k": b"\x01"}, [], {}], use_bin_type=True)
        cmd = Command.decode(raw)
        assert (cmd.op, cmd.client, cmd.seq, cmd.values, cmd.meta, cmd.txn) == \
            ("update", b"c", 5, {"k": b"\x01"}, {}, None)
        assert cmd.legacy

    def test_unknown_version_refused(self) -> None:
        import msgpack
        with pytest.raises(ValueError, match="unsupported command format"):
            Command.decode(msgpack.packb([99, "update"]))

    def test_unknown_op_refused(self) -> None:
        import msgpack
        with pytest.raises(ValueError, match="unknown command op"):
            Command.decode(msgpack.packb([1, "drop_table", b"", 0, {}, [], {}]))
