"""docker_bool, Filters and parse_timestamp against dockerd's rules (httputils, filters.Args, timetypes)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.params import Filters, docker_bool, parse_timestamp
from engine import errdefs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        ("false", False),
        ("False", False),
        ("none", False),
        ("None", False),
        (" false ", False),
        ("1", True),
        ("true", True),
        ("True", True),
        ("yes", True),
        ("anything", True),
    ],
)
def test_docker_bool(value, expected):
    assert docker_bool(value) is expected


def test_docker_bool_absent_uses_default():
    assert docker_bool(None) is False
    assert docker_bool(None, default=True) is True
    assert docker_bool("", default=True) is False


@pytest.mark.parametrize(
    "raw",
    [
        '{"label":{"a=b":true,"c":true},"dangling":{"true":true}}',
        '{"label":["a=b","c"],"dangling":["true"]}',
    ],
)
def test_both_json_shapes_parse_alike(raw):
    f = Filters.parse(raw)
    assert f.keys() == ["label", "dangling"]
    assert f.get("label") == ["a=b", "c"]
    assert f.has("dangling") and not f.has("before")
    assert f.get("before") == []
    assert len(f) == 2


@pytest.mark.parametrize("raw", [None, "", "{}", "null"])
def test_empty_filters(raw):
    f = Filters.parse(raw)
    assert len(f) == 0 and f.keys() == []
    assert f.match_labels({}) and f.exact_match("name", "x") and f.bool_value("dangling") is None


def test_map_form_false_values_do_not_count():
    # Go's ExactMatch looks at the stored bool.
    f = Filters.parse('{"name":{"a":false,"b":true}}')
    assert f.get("name") == ["b"]
    assert not f.exact_match("name", "a")


def test_null_values_keep_the_key():
    f = Filters.parse('{"label":null}')
    assert f.has("label") and f.get("label") == []
    with pytest.raises(errdefs.InvalidParameter):
        f.validate(["name"])


@pytest.mark.parametrize("raw", ["{bad", "[1,", "nope"])
def test_undecodable_json_is_invalid_parameter(raw):
    with pytest.raises(errdefs.InvalidParameter) as exc:
        Filters.parse(raw)
    assert exc.value.message


@pytest.mark.parametrize(
    "raw", ['["a"]', '"x"', "3", '{"a":"b"}', '{"a":[1]}', '{"a":{"b":"yes"}}', '{"a":[true]}']
)
def test_wrong_json_shapes_are_invalid_filter(raw):
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter$"):
        Filters.parse(raw)


def test_validate_names_the_first_unknown_key():
    f = Filters.parse('{"name":["x"],"foo":["y"],"bar":["z"]}')
    f.validate(["name", "foo", "bar"])
    with pytest.raises(errdefs.InvalidParameter) as exc:
        f.validate(["name", "bar"])
    assert exc.value.message == "invalid filter 'foo'"


def test_exact_and_fuzzy_match():
    f = Filters.parse('{"container":["abc","web"]}')
    assert f.exact_match("container", "web")
    assert not f.exact_match("container", "abcdef")
    assert f.fuzzy_match("container", "abcdef")
    assert not f.fuzzy_match("container", "xabc")
    assert f.exact_match("other", "anything") and f.fuzzy_match("other", "anything")


@pytest.mark.parametrize(
    ("filters", "labels", "expected"),
    [
        (["a"], {"a": "1"}, True),
        (["a"], {"b": "1"}, False),
        (["a=1"], {"a": "1"}, True),
        (["a=1"], {"a": "2"}, False),
        (["a="], {"a": ""}, True),
        (["a="], {"a": "x"}, False),
        (["a=1=2"], {"a": "1=2"}, True),
        (["a=1", "b"], {"a": "1", "b": ""}, True),
        (["a=1", "b"], {"a": "1"}, False),  # all label values must match
        (["a"], {}, False),
        (["a"], None, False),
        ([], {}, True),
    ],
)
def test_match_labels(filters, labels, expected):
    f = Filters.parse(json.dumps({"label": filters}))
    assert f.match_labels(labels) is expected


def test_match_labels_other_key():
    f = Filters.parse('{"label!":["tmp"]}')
    assert f.match_labels({"tmp": "1"}, key="label!")
    assert f.match_labels({"tmp": "1"})  # "label" itself is absent
    assert not f.match_labels({"keep": "1"}, key="label!")


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["true"], True), (["1"], True), (["false"], False), (["0"], False), (["1", "true"], True)],
)
def test_bool_value(values, expected):
    assert Filters.parse(json.dumps({"dangling": values})).bool_value("dangling") is expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["maybe"], "invalid filter 'dangling=[maybe]'"),
        (["true", "false"], "invalid filter 'dangling=[true false]'"),
        (["TRUE"], "invalid filter 'dangling=[TRUE]'"),
        ([], "invalid filter 'dangling'"),
    ],
)
def test_bool_value_errors_use_dockerd_text(values, message):
    f = Filters.parse(json.dumps({"dangling": values}))
    with pytest.raises(errdefs.InvalidParameter) as exc:
        f.bool_value("dangling")
    assert exc.value.message == message


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.lists(st.text(max_size=8), unique=True, max_size=4),
        max_size=4,
    )
)
def test_list_and_map_forms_are_equivalent(fields):
    as_list = Filters.parse(json.dumps(fields))
    as_map = Filters.parse(json.dumps({k: dict.fromkeys(v, True) for k, v in fields.items()}))
    assert as_list.as_dict() == as_map.as_dict() == fields


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0),
        ("1505028243", 1505028243 * 10**9),
        ("1505028243.5", 1505028243 * 10**9 + 500_000_000),
        ("1505028243.000000001", 1505028243 * 10**9 + 1),
        ("1505028243.123456789", 1505028243 * 10**9 + 123456789),
        ("-5", -5 * 10**9),
        ("+7", 7 * 10**9),
    ],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ("1.x", 'strconv.ParseInt: parsing "x": invalid syntax'),
        (".5", 'strconv.ParseInt: parsing "": invalid syntax'),
        ("2017-01-01T00:00:00Z", 'strconv.ParseInt: parsing "2017-01-01T00:00:00Z": invalid syntax'),
        ("99999999999999999999", 'strconv.ParseInt: parsing "99999999999999999999": value out of range'),
    ],
)
def test_parse_timestamp_errors_are_dockerd_500s(value, message):
    # dockerd relays strconv's error untyped, which its error mapping turns into a 500.
    with pytest.raises(errdefs.Internal) as exc:
        parse_timestamp(value)
    assert exc.value.message == message
