"""Access-line and log-timestamp parsing."""

from __future__ import annotations

import pytest

from kato_exporter.sources.accesslog import Cursor, parse_access_line, parse_timestamp


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ('INFO:     172.17.0.1:40524 - "GET /sessions/count HTTP/1.1" 200 OK', ("GET", "200")),
        ('INFO:     10.0.0.5:1 - "POST /sessions HTTP/1.1" 500 Internal Server Error', ("POST", "500")),
        (
            'INFO:     10.0.0.5:1 - "DELETE /sessions/session-ab-12?x=1 HTTP/1.0" 404 Not Found',
            ("DELETE", "404"),
        ),
        ('INFO:     10.0.0.5:1 - "BREW /pot HTTP/1.1" 418', ("OTHER", "418")),
        ("INFO:     Started server process [1]", None),
        ("INFO:     Application startup complete.", None),
        ('"GET / HTTP/1.1" 2000 OK', None),
    ],
)
def test_access_lines(line, parsed):
    assert parse_access_line(line) == parsed


def test_timestamps_compare_in_time_order_whatever_their_digits():
    # Docker drops trailing zeros of the fraction, so text order would put .12345Z after .123456789Z
    assert parse_timestamp("2026-11-26T18:06:40.12345Z") == 1795716400_123450000
    assert parse_timestamp("2026-11-26T18:06:40.123456789Z") > parse_timestamp("2026-11-26T18:06:40.12345Z")
    assert parse_timestamp("2026-11-26T18:06:41Z") == 1795716401_000000000
    with pytest.raises(ValueError):
        parse_timestamp("INFO:")


def test_cursor_counts_each_line_once_across_a_resume_even_out_of_order():
    start = parse_timestamp("2026-11-26T18:06:40Z")
    cursor = Cursor(start)
    out = '2026-11-26T18:06:41.5Z INFO:     1.2.3.4:1 - "GET / HTTP/1.1" 200 OK'
    err = '2026-11-26T18:06:41.4Z INFO:     1.2.3.4:2 - "GET / HTTP/1.1" 500 Internal Server Error'
    old = '2026-11-26T18:06:39Z INFO:     1.2.3.4:3 - "GET / HTTP/1.1" 200 OK'
    assert cursor.first_sight(out)
    assert cursor.first_sight(err)  # stderr, stamped earlier, read later: still counted
    assert not cursor.first_sight(old)  # before the start
    assert cursor.since() == "1795716399.500000000"  # resume a little before the newest line
    assert not cursor.first_sight(out) and not cursor.first_sight(err)  # replayed: not again
    assert not cursor.first_sight("no timestamp here")
