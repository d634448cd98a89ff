//! Timestamps as Kopf writes and reads them.
//!
//! Kopf writes `datetime.isoformat(timespec='microseconds')` of a tz-aware UTC datetime
//! (`2026-11-22T01:27:42.807251+00:00`; before 1.37 the datetimes were naive:
//! `2020-02-14T16:58:25.396364`), and reads with `iso8601.parse_date(value, default_timezone=None)`
//! (iso8601 2.1), whose grammar [`parse`] reproduces, backtracking quirks included.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::Offset;

/// The failure to read a stored timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not match iso8601's grammar.
    #[error("unable to parse date string {0:?}")]
    Syntax(String),
    /// The text matches the grammar but is not a valid date, time or offset (Python's `datetime`
    /// refuses it: month 13, hour 24, second 60, an offset of a day or more, year 0).
    #[error("invalid date or time in {0:?}")]
    OutOfRange(String),
}

/// Formats a timestamp as Kopf stores `started`/`stopped`/`delayed`:
/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (always six fractional digits; nanoseconds are truncated to
/// microseconds, the precision of Python's datetime).
pub fn format(ts: Timestamp) -> String {
    let (dt, micros) = utc_parts(ts);
    format!("{}.{micros:06}+00:00", format_seconds(dt))
}

/// Formats a timestamp as Kopf's touch-dummy value: `datetime.now(UTC).isoformat()`, i.e. like
/// [`format()`] but without the fraction when the microseconds are zero
/// (`2026-11-22T01:27:42+00:00`).
pub fn format_touch(ts: Timestamp) -> String {
    let (dt, micros) = utc_parts(ts);
    if micros == 0 {
        format!("{}+00:00", format_seconds(dt))
    } else {
        format!("{}.{micros:06}+00:00", format_seconds(dt))
    }
}

fn utc_parts(ts: Timestamp) -> (DateTime, i32) {
    // Floor to microseconds, as a Python datetime would hold it.
    let micros = ts.as_nanosecond().div_euclid(1_000);
    let floored = i64::try_from(micros)
        .ok()
        .and_then(|micros| Timestamp::from_microsecond(micros).ok())
        .unwrap_or(ts);
    let dt = Offset::UTC.to_datetime(floored);
    (dt, dt.subsec_nanosecond() / 1_000)
}

fn format_seconds(dt: DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Parses any timestamp Kopf may have stored (or iso8601 2.1 would accept): `+00:00`, `Z`, other
/// offsets (`+02:00`, `-0630`, `+05`), and naive values, which are taken as UTC (pre-1.37 Kopf wrote
/// naive UTC times). Also the reduced forms iso8601 accepts: `2020-02-14`, `2020-02`, `2020`,
/// `20200214T165825`, a space instead of `T`, `,` as the decimal mark, any number of fractional
/// digits (truncated to microseconds), and one trailing newline.
///
/// # Errors
///
/// [`ParseError`] for text iso8601 would refuse, with the same verdicts (e.g. `202002`,
/// `2020-02-14t16:58:25`, `+24:00`, `2020-02-30`).
///
/// # Caveats
///
/// Kopf keeps naive values naive (and then fails to compare them with aware ones); this returns
/// them as UTC instants, so a naive stored value is re-written in the `+00:00` form.
pub fn parse(text: &str) -> Result<Timestamp, ParseError> {
    let groups = match_iso8601(text.as_bytes()).ok_or_else(|| ParseError::Syntax(text.into()))?;
    groups
        .to_timestamp(text.as_bytes())
        .ok_or_else(|| ParseError::OutOfRange(text.into()))
}

/// A byte range of a matched group.
type Span = Option<(usize, usize)>;

/// The named groups of iso8601's `ISO8601_REGEX`.
#[derive(Debug, Clone, Copy, Default)]
struct Groups {
    monthdash: Span,
    month: Span,
    daydash: Span,
    day: Span,
    hour: Span,
    minute: Span,
    second: Span,
    fraction: Span,
    zulu: bool,
    tz_sign: Span,
    tz_hour: Span,
    tz_minute: Span,
}

impl Groups {
    fn to_timestamp(self, s: &[u8]) -> Option<Timestamp> {
        let num = |span: Span, default: i64| -> i64 {
            span.map_or(default, |(a, b)| {
                s[a..b]
                    .iter()
                    .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
            })
        };
        let year = num(Some((0, 4)), 0);
        let month = num(self.month.or(self.monthdash), 1);
        let day = num(self.day.or(self.daydash), 1);
        let hour = num(self.hour, 0);
        let minute = num(self.minute, 0);
        let second = num(self.second, 0);
        // int(Decimal("0.<digits>") * 1000000): the first six digits, zero-padded, truncated.
        let micros = self.fraction.map_or(0, |(a, b)| {
            (0..6).fold(0, |acc, i| {
                let digit = if a + i < b {
                    i64::from(s[a + i] - b'0')
                } else {
                    0
                };
                acc * 10 + digit
            })
        });
        // Python's datetime ranges (year 1..=9999, no leap seconds).
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || !(0..=23).contains(&hour)
            || !(0..=59).contains(&minute)
            || !(0..=59).contains(&second)
        {
            return None;
        }
        let dt = DateTime::new(
            year as i16,
            month as i8,
            day as i8,
            hour as i8,
            minute as i8,
            second as i8,
            (micros * 1_000) as i32,
        )
        .ok()?;
        let offset_seconds = if self.zulu {
            0
        } else if self.tz_sign.is_some() {
            let magnitude = num(self.tz_hour, 0) * 3600 + num(self.tz_minute, 0) * 60;
            // Python's timezone() wants strictly less than a day.
            if magnitude >= 86_400 {
                return None;
            }
            match self.tz_sign {
                Some((a, _)) if s[a] == b'-' => -magnitude,
                _ => magnitude,
            }
        } else {
            0 // naive: taken as UTC
        };
        Offset::from_seconds(offset_seconds as i32)
            .ok()?
            .to_timestamp(dt)
            .ok()
    }
}

/// The continuation of a match: given the position reached and the groups so far, finish it.
type Cont<'a> = &'a dyn Fn(usize, Groups) -> Option<Groups>;

/// Matches iso8601 2.1's `ISO8601_REGEX` (anchored at the start, `$` at the end) with the same
/// greedy-then-backtrack order as Python's `re`, returning the groups of the first match.
fn match_iso8601(s: &[u8]) -> Option<Groups> {
    if s.len() < 4 || !s[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let end = |i: usize, g: Groups| at_end(s, i).then_some(g);
    let g = Groups::default();
    month_part(s, 4, g, &|i, g| {
        day_part(s, i, g, &|i, g| {
            time_part(s, i, g, &end).or_else(|| end(i, g))
        })
        .or_else(|| end(i, g))
    })
    .or_else(|| end(4, g))
}

/// Python's `$` without MULTILINE: the end, or just before a final newline.
fn at_end(s: &[u8], i: usize) -> bool {
    i == s.len() || (i + 1 == s.len() && s[i] == b'\n')
}

/// Greedy `[0-9]{min,max}` at `i`, trying the longest run first.
fn digits(
    s: &[u8],
    i: usize,
    min: usize,
    max: usize,
    k: &dyn Fn(usize) -> Option<Groups>,
) -> Option<Groups> {
    let available = s[i.min(s.len())..]
        .iter()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count();
    (min..=available).rev().find_map(|n| k(i + n))
}

fn byte(s: &[u8], i: usize) -> Option<u8> {
    s.get(i).copied()
}

/// `(-(?P<monthdash>[0-9]{1,2}) | (?P<month>[0-9]{2})(?!$))`
fn month_part(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    let dashed = if byte(s, i) == Some(b'-') {
        digits(s, i + 1, 1, 2, &|j| {
            k(
                j,
                Groups {
                    monthdash: Some((i + 1, j)),
                    ..g
                },
            )
        })
    } else {
        None
    };
    dashed.or_else(|| {
        digits(s, i, 2, 2, &|j| {
            if at_end(s, j) {
                None
            } else {
                k(
                    j,
                    Groups {
                        month: Some((i, j)),
                        ..g
                    },
                )
            }
        })
    })
}

/// `(-(?P<daydash>[0-9]{1,2}) | (?P<day>[0-9]{2}))`
fn day_part(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    let dashed = if byte(s, i) == Some(b'-') {
        digits(s, i + 1, 1, 2, &|j| {
            k(
                j,
                Groups {
                    daydash: Some((i + 1, j)),
                    ..g
                },
            )
        })
    } else {
        None
    };
    dashed.or_else(|| {
        digits(s, i, 2, 2, &|j| {
            k(
                j,
                Groups {
                    day: Some((i, j)),
                    ..g
                },
            )
        })
    })
}

/// `[ T](?P<hour>..)(:?(?P<minute>..))?(:?(?P<second>.{1,2})([.,](?P<second_fraction>.+))?)?(tz)?`
fn time_part(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    if !matches!(byte(s, i), Some(b' ' | b'T')) {
        return None;
    }
    digits(s, i + 1, 2, 2, &|j| {
        let g = Groups {
            hour: Some((i + 1, j)),
            ..g
        };
        let after_minute = |j: usize, g: Groups| -> Option<Groups> {
            let after_second = |j: usize, g: Groups| timezone(s, j, g, k).or_else(|| k(j, g));
            second(s, j, g, &after_second).or_else(|| after_second(j, g))
        };
        minute(s, j, g, &after_minute).or_else(|| after_minute(j, g))
    })
}

/// `:{0,1}(?P<minute>[0-9]{2})`
fn minute(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    let with = |start: usize| {
        digits(s, start, 2, 2, &|j| {
            k(
                j,
                Groups {
                    minute: Some((start, j)),
                    ..g
                },
            )
        })
    };
    let colon = if byte(s, i) == Some(b':') {
        with(i + 1)
    } else {
        None
    };
    colon.or_else(|| with(i))
}

/// `:{0,1}(?P<second>[0-9]{1,2})([.,](?P<second_fraction>[0-9]+)){0,1}`
fn second(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    let with = |start: usize| {
        digits(s, start, 1, 2, &|j| {
            let g = Groups {
                second: Some((start, j)),
                ..g
            };
            let fraction = if matches!(byte(s, j), Some(b'.' | b',')) {
                digits(s, j + 1, 1, usize::MAX, &|m| {
                    k(
                        m,
                        Groups {
                            fraction: Some((j + 1, m)),
                            ..g
                        },
                    )
                })
            } else {
                None
            };
            fraction.or_else(|| k(j, g))
        })
    };
    let colon = if byte(s, i) == Some(b':') {
        with(i + 1)
    } else {
        None
    };
    colon.or_else(|| with(i))
}

/// `Z | (?P<tz_sign>[-+])(?P<tz_hour>[0-9]{2}):{0,1}(?P<tz_minute>[0-9]{2}){0,1}`
fn timezone(s: &[u8], i: usize, g: Groups, k: Cont<'_>) -> Option<Groups> {
    match byte(s, i) {
        Some(b'Z') => k(i + 1, Groups { zulu: true, ..g }),
        Some(b'+' | b'-') => digits(s, i + 1, 2, 2, &|j| {
            let g = Groups {
                tz_sign: Some((i, i + 1)),
                tz_hour: Some((i + 1, j)),
                ..g
            };
            let minutes = |start: usize| {
                digits(s, start, 2, 2, &|m| {
                    k(
                        m,
                        Groups {
                            tz_minute: Some((start, m)),
                            ..g
                        },
                    )
                })
                .or_else(|| k(start, g))
            };
            let colon = if byte(s, j) == Some(b':') {
                minutes(j + 1)
            } else {
                None
            };
            colon.or_else(|| minutes(j))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn formats_like_isoformat_with_microseconds() {
        // Expected values came from Kopf 1.45.2's `format_iso8601(dt)` and `dt.isoformat()`.
        let cases = [
            (
                "2026-11-22T01:27:42.807251Z",
                "2026-11-22T01:27:42.807251+00:00",
                "2026-11-22T01:27:42.807251+00:00",
            ),
            (
                "2026-11-22T01:27:42Z",
                "2026-11-22T01:27:42.000000+00:00",
                "2026-11-22T01:27:42+00:00",
            ),
            (
                "0999-01-02T03:04:05.000006Z",
                "0999-01-02T03:04:05.000006+00:00",
                "0999-01-02T03:04:05.000006+00:00",
            ),
            (
                "2026-01-01T00:00:00.0001Z",
                "2026-01-01T00:00:00.000100+00:00",
                "2026-01-01T00:00:00.000100+00:00",
            ),
        ];
        for (input, kopf, touch) in cases {
            assert_eq!(format(ts(input)), kopf);
            assert_eq!(format_touch(ts(input)), touch);
        }
    }

    #[test]
    fn nanoseconds_are_truncated() {
        assert_eq!(
            format(ts("2026-11-22T01:27:42.807251999Z")),
            "2026-11-22T01:27:42.807251+00:00"
        );
        assert_eq!(
            format(ts("1969-12-31T23:59:59.9999999Z")),
            "1969-12-31T23:59:59.999999+00:00"
        );
    }

    #[test]
    fn parses_everything_iso8601_accepts() {
        // Expected values came from Kopf 1.45.2: `parse_iso8601(text)`, then naive values taken as
        // UTC, then `format_iso8601(...)` in UTC.
        let cases = [
            (
                "2026-11-22T01:27:42.807251+00:00",
                "2026-11-22T01:27:42.807251+00:00",
            ),
            (
                "2020-02-14T16:58:25.396364",
                "2020-02-14T16:58:25.396364+00:00",
            ),
            (
                "2020-02-14T16:58:25.396364Z",
                "2020-02-14T16:58:25.396364+00:00",
            ),
            ("2020-02-14T16:58:25Z", "2020-02-14T16:58:25.000000+00:00"),
            ("2020-02-14T16:58:25", "2020-02-14T16:58:25.000000+00:00"),
            (
                "2020-02-14T18:58:25.5+02:00",
                "2020-02-14T16:58:25.500000+00:00",
            ),
            (
                "2020-02-14T10:58:25.123-0630",
                "2020-02-14T17:28:25.123000+00:00",
            ),
            ("2020-02-14T16:58:25,25", "2020-02-14T16:58:25.250000+00:00"),
            ("2020-02-14 16:58:25", "2020-02-14T16:58:25.000000+00:00"),
            ("2020-02-14T16:58", "2020-02-14T16:58:00.000000+00:00"),
            ("2020-02-14T16", "2020-02-14T16:00:00.000000+00:00"),
            ("2020-02-14", "2020-02-14T00:00:00.000000+00:00"),
            ("2020-02", "2020-02-01T00:00:00.000000+00:00"),
            ("2020", "2020-01-01T00:00:00.000000+00:00"),
            ("20200214T165825", "2020-02-14T16:58:25.000000+00:00"),
            ("2020-2-4T16:58:25", "2020-02-04T16:58:25.000000+00:00"),
            (
                "2020-02-14T16:58:25.1234567",
                "2020-02-14T16:58:25.123456+00:00",
            ),
            (
                "2020-02-14T16:58:25.9999999Z",
                "2020-02-14T16:58:25.999999+00:00",
            ),
            // A backtracking quirk: the minute fails, so ":5" becomes the second.
            ("2020-02-14T16:5", "2020-02-14T16:00:05.000000+00:00"),
            ("2020-02-14T16:58:5", "2020-02-14T16:58:05.000000+00:00"),
            ("2020-02-14T16:58:25+05", "2020-02-14T11:58:25.000000+00:00"),
            (
                "2020-02-14T16:58:25+0530",
                "2020-02-14T11:28:25.000000+00:00",
            ),
            (
                "2020-02-14T16:58:25.396364\n",
                "2020-02-14T16:58:25.396364+00:00",
            ),
            ("2020-02-14T1658", "2020-02-14T16:58:00.000000+00:00"),
            ("2020-0214", "2020-02-14T00:00:00.000000+00:00"),
            ("202002-14", "2020-02-14T00:00:00.000000+00:00"),
            (
                "2020-02-14T16:58:25-00:00",
                "2020-02-14T16:58:25.000000+00:00",
            ),
        ];
        for (text, expected) in cases {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(format(parsed), expected, "for {text:?}");
        }
    }

    #[test]
    fn refuses_what_iso8601_refuses() {
        // Each of these raised iso8601.ParseError in Kopf 1.45.2's `parse_iso8601`.
        let syntax = [
            "202002",
            "garbage",
            "",
            "2020-02-14T16:58:25 ",
            "2020-02-14T16:58:25.+00:00",
            "2020-02-14t16:58:25",
            "2020-02-14T16:58:25z",
        ];
        for text in syntax {
            assert_eq!(
                parse(text),
                Err(ParseError::Syntax(text.into())),
                "for {text:?}"
            );
        }
        let range = [
            "2020-02-14T16:58:25+24:00",
            "2020-02-14T16:58:25+23:75",
            "2020-13-01",
            "2020-02-30",
            "2020-02-14T24:00:00",
            "2020-02-14T16:58:60",
            "0000-01-01",
        ];
        for text in range {
            assert_eq!(
                parse(text),
                Err(ParseError::OutOfRange(text.into())),
                "for {text:?}"
            );
        }
    }

    #[test]
    fn round_trips() {
        let t = ts("2026-11-22T01:27:42.807251Z");
        assert_eq!(parse(&format(t)).unwrap(), t);
        assert_eq!(parse(&format_touch(t)).unwrap(), t);
    }
}
