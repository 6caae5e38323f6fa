//! Parsing of the values every operation takes (ids, pages, time bounds) into
//! types that cannot be wrong. Both adapters call these, so a bad value gets
//! the same message on REST and gRPC.

use chrono::{DateTime, SubsecRound as _, Utc};
use uuid::Uuid;

use crate::error::ApiError;
use crate::protocol::{DEFAULT_TAKE, MAX_TAKE};

/// Parses a required id: a UUID in canonical hyphenated form.
pub fn uuid(name: &str, value: &str) -> Result<Uuid, ApiError> {
    if value.is_empty() {
        return Err(ApiError::InvalidArgument(format!("{name} is required")));
    }
    if value.len() != 36 {
        return Err(ApiError::InvalidArgument(format!("{name} must be a UUID")));
    }
    Uuid::try_parse(value).map_err(|_| ApiError::InvalidArgument(format!("{name} must be a UUID")))
}

/// Parses an optional id filter (`None`: not given).
pub fn optional_uuid(name: &str, value: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    value.map(|v| uuid(name, v)).transpose()
}

/// A validated page: `take` rows after `skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub take: i64,
    pub skip: i64,
}

impl Page {
    /// `take` (1 to [`MAX_TAKE`], default [`DEFAULT_TAKE`]) and `skip` (0 or more).
    pub fn new(take: Option<i64>, skip: Option<i64>) -> Result<Page, ApiError> {
        let take = match take {
            None => DEFAULT_TAKE,
            Some(t) if (1..=MAX_TAKE).contains(&t) => t,
            Some(_) => {
                return Err(ApiError::InvalidArgument(format!(
                    "take must be between 1 and {MAX_TAKE}"
                )));
            }
        };
        let skip = match skip {
            None => 0,
            Some(s) if s >= 0 => s,
            Some(_) => return Err(ApiError::InvalidArgument("skip must be 0 or more".into())),
        };
        Ok(Page { take, skip })
    }
}

/// Which end of a range a time bound is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// Parses an inclusive bound on a creation time, an RFC 3339 date-time or a
/// full date (the ISO 8601 forms the OpenAPI `date-time` and `date` formats
/// name), into the half-open range the store uses: `Start` gives "at or
/// after", `End` "strictly before" (a date as the end includes that whole
/// day; a time, that microsecond). `None` means unbounded.
pub fn time_bound(
    name: &str,
    value: Option<&str>,
    bound: Bound,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::InvalidArgument(format!(
            "{name} must be an ISO 8601 date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        ))
    };
    let (start, is_date) = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        (t.with_timezone(&Utc), false)
    } else if value.len() == 10
        && let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
    {
        (d.and_hms_opt(0, 0, 0).ok_or_else(invalid)?.and_utc(), true)
    } else {
        return Err(invalid());
    };
    let start = start.trunc_subsecs(6);
    let bound = match (bound, is_date) {
        (Bound::Start, _) => start,
        (Bound::End, true) => start + chrono::TimeDelta::days(1),
        (Bound::End, false) => start + chrono::TimeDelta::microseconds(1),
    };
    // Stored times have four-digit years; the end of 9999-12-31 stays in range.
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .ok_or_else(invalid)?;
    Ok(Some(bound.min(last)))
}

/// A comma-separated list: its non-empty items, trimmed.
pub fn comma_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A comma-separated list of ids; the first that is no UUID is refused,
/// naming the parameter.
pub fn uuid_list(name: &str, value: Option<&str>) -> Result<Vec<Uuid>, ApiError> {
    comma_list(value)
        .iter()
        .map(|v| {
            uuid(name, v).map_err(|_| {
                ApiError::InvalidArgument(format!("{name} must be a comma-separated list of UUIDs"))
            })
        })
        .collect()
}

/// A required text field: present and not empty.
pub fn required_text(name: &str, value: Option<String>) -> Result<String, ApiError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::InvalidArgument(format!("{name} is required"))),
    }
}

/// Text to be stored: a NUL character, which PostgreSQL refuses in text (and
/// SQLite would cut short), is refused for every field of `fields`.
pub fn storable<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), ApiError> {
    match fields.into_iter().find(|(_, v)| v.contains('\0')) {
        Some((name, _)) => Err(ApiError::InvalidArgument(format!(
            "{name} must not contain NUL characters"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical_uuids() {
        let ok = "0193a000-0000-7000-8000-000000000001";
        assert_eq!(uuid("repoId", ok).expect("valid").to_string(), ok);
        assert_eq!(
            uuid("repoId", &ok.to_uppercase())
                .expect("valid")
                .to_string(),
            ok
        );
        for bad in [
            "repo-123",
            "0193a0000000700080000000000000001",
            "{0193a000-0000-7000-8000-000000000001}",
            " 0193a000-0000-7000-8000-00000000001",
        ] {
            assert_eq!(
                uuid("repoId", bad).expect_err(bad).to_string(),
                "repoId must be a UUID"
            );
        }
        assert_eq!(
            uuid("repoId", "").expect_err("empty").to_string(),
            "repoId is required"
        );
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(
            Page::new(None, None).expect("default"),
            Page {
                take: DEFAULT_TAKE,
                skip: 0
            }
        );
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(MAX_TAKE + 1), None).is_err());
        assert!(Page::new(None, Some(-1)).is_err());
    }

    #[test]
    fn time_bounds_are_inclusive_iso_8601() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("valid")
                .with_timezone(&Utc)
        };
        let start = |v| time_bound("from", Some(v), Bound::Start).expect(v);
        let end = |v| time_bound("to", Some(v), Bound::End).expect(v);
        assert_eq!(time_bound("from", None, Bound::Start).expect("none"), None);
        assert_eq!(start("2026-01-31"), Some(t("2026-01-31T00:00:00Z")));
        assert_eq!(end("2026-01-31"), Some(t("2026-02-01T00:00:00Z")));
        assert_eq!(end("9999-12-31"), Some(t("9999-12-31T23:59:59.999999Z")));
        assert_eq!(
            start("2026-01-31T12:00:00+02:00"),
            Some(t("2026-01-31T10:00:00Z"))
        );
        assert_eq!(
            end("2026-01-31T12:00:00.5Z"),
            Some(t("2026-01-31T12:00:00.500001Z"))
        );
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-01-31T25:00:00Z",
            "31/01/2026",
            "1706700000",
            "2026-01-31T12:00:00",
            "2026-1-31",
            "+2026-01-31",
        ] {
            let e = time_bound("from", Some(bad), Bound::Start).expect_err(bad);
            assert!(
                e.to_string().starts_with("from must be an ISO 8601"),
                "{bad}"
            );
        }
    }
}
