//! SQL types that mean the same thing on both backends, so one `table!` schema
//! serves PostgreSQL and SQLite:
//!
//! | type        | PostgreSQL    | SQLite                                           |
//! |-------------|---------------|--------------------------------------------------|
//! | [`DbUuid`]  | `uuid`        | 16-byte `blob`                                   |
//! | [`DbTime`]  | `timestamptz` | RFC 3339 UTC text, 6 fractional digits, `Z`      |
//! | [`DbJson`]  | `jsonb`       | JSON text                                        |
//!
//! Read models use plain [`Uuid`], [`DateTime<Utc>`] and [`serde_json::Value`];
//! values written or compared go through the [`SqlUuid`], [`SqlTime`] and
//! [`SqlJson`] newtypes (a foreign type cannot carry our `AsExpression`).

use chrono::{DateTime, SubsecRound, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{Binary, SqlType, Text};
use diesel::sqlite::{Sqlite, SqliteValue};
use uuid::Uuid;

/// A UUID column.
#[derive(Debug, Clone, Copy, SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 2950, array_oid = 2951))]
#[diesel(sqlite_type(name = "Binary"))]
pub struct DbUuid;

/// A point in time, UTC, microsecond precision.
#[derive(Debug, Clone, Copy, SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 1184, array_oid = 1185))]
#[diesel(sqlite_type(name = "Text"))]
pub struct DbTime;

/// A JSON document.
#[derive(Debug, Clone, Copy, SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 3802, array_oid = 3807))]
#[diesel(sqlite_type(name = "Text"))]
pub struct DbJson;

/// A UUID to write or compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, serde::Serialize)]
#[serde(transparent)]
#[diesel(sql_type = DbUuid)]
pub struct SqlUuid(pub Uuid);

/// A time to write or compare; see [`now`] for how times are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, serde::Serialize)]
#[serde(transparent)]
#[diesel(sql_type = DbTime)]
pub struct SqlTime(pub DateTime<Utc>);

/// A JSON document to write.
#[derive(Debug, Clone, PartialEq, AsExpression)]
#[diesel(sql_type = DbJson)]
pub struct SqlJson(pub serde_json::Value);

impl From<Uuid> for SqlUuid {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl From<DateTime<Utc>> for SqlTime {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

impl From<serde_json::Value> for SqlJson {
    fn from(v: serde_json::Value) -> Self {
        Self(v)
    }
}

diesel::define_sql_function! {
    /// SQL's `coalesce(x, y)`: `x` unless it is NULL. (With `x` twice, on a
    /// column, it is the column in a form no index serves: see the list
    /// walks in `conversations/list.rs`.)
    fn coalesce<ST: diesel::sql_types::SingleValue>(x: ST, y: ST) -> ST;
}

/// The current time, truncated to the microseconds both backends keep, so a
/// value read back equals the value written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The SQLite text form of a time: fixed width, so text order is time order.
pub fn sqlite_time_text(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format(SQLITE_TIME_FORMAT).to_string();
    }
    // What chrono's `SQLITE_TIME_FORMAT` writes, digit by digit, without
    // parsing that format and formatting each field on every call (2-3 % of
    // SQLite's writer thread under load): a leap second's nanoseconds run
    // past a second, and it reads as second 60.
    let (second, nanos) = match t.nanosecond() {
        n if n >= 1_000_000_000 => (t.second() + 1, n - 1_000_000_000),
        n => (t.second(), n),
    };
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (at, width, value) in [
        (0, 4, year as u32),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, second),
        (20, 6, nanos / 1_000),
    ] {
        let mut value = value;
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    text.iter().map(|&b| char::from(b)).collect()
}

/// The format of [`sqlite_time_text`], as chrono writes it.
const SQLITE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

// --- PostgreSQL: delegate to diesel's own implementations of the native types.

impl ToSql<DbUuid, Pg> for SqlUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Uuid as ToSql<diesel::sql_types::Uuid, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<DbUuid, Pg> for Uuid {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <Uuid as FromSql<diesel::sql_types::Uuid, Pg>>::from_sql(bytes)
    }
}

impl ToSql<DbTime, Pg> for SqlTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<diesel::sql_types::Timestamptz, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<DbTime, Pg> for DateTime<Utc> {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <DateTime<Utc> as FromSql<diesel::sql_types::Timestamptz, Pg>>::from_sql(bytes)
    }
}

impl ToSql<DbJson, Pg> for SqlJson {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <serde_json::Value as ToSql<diesel::sql_types::Jsonb, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<DbJson, Pg> for serde_json::Value {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <serde_json::Value as FromSql<diesel::sql_types::Jsonb, Pg>>::from_sql(bytes)
    }
}

// --- SQLite: blobs and text.

impl ToSql<DbUuid, Sqlite> for SqlUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.as_bytes().as_slice());
        Ok(serialize::IsNull::No)
    }
}

impl FromSql<DbUuid, Sqlite> for Uuid {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let bytes = <Vec<u8> as FromSql<Binary, Sqlite>>::from_sql(value)?;
        Ok(Uuid::from_slice(&bytes)?)
    }
}

impl ToSql<DbTime, Sqlite> for SqlTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_time_text(&self.0));
        Ok(serialize::IsNull::No)
    }
}

impl FromSql<DbTime, Sqlite> for DateTime<Utc> {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(DateTime::parse_from_rfc3339(&text)?.with_timezone(&Utc))
    }
}

impl ToSql<DbJson, Sqlite> for SqlJson {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.to_string());
        Ok(serialize::IsNull::No)
    }
}

impl FromSql<DbJson, Sqlite> for serde_json::Value {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(serde_json::from_str(&text)?)
    }
}

// --- Enums stored as their names (`text` on both backends): read typed,
// so an unknown name is an error where it is read, not a string passed on.

/// Makes each enum readable from a `Text` column on both backends, by its
/// `FromStr` (a macro because diesel's traits are foreign and the enums are
/// several; a blanket impl over a trait of ours would break the orphan rule).
macro_rules! text_enum {
    ($($t:ty),+) => {$(
        impl FromSql<Text, Pg> for $t {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let name = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                Ok(name.parse::<$t>()?)
            }
        }

        impl FromSql<Text, Sqlite> for $t {
            fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
                let name = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
                Ok(name.parse::<$t>()?)
            }
        }

        impl<DB: diesel::backend::Backend> diesel::Queryable<Text, DB> for $t
        where
            $t: FromSql<Text, DB>,
        {
            type Row = Self;
            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }
    )+};
}

text_enum!(
    crate::domain::OrgRole,
    crate::domain::Access,
    crate::domain::MessageRole,
    crate::domain::AiType,
    crate::domain::RiskType
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The text is what chrono's format writes, for times across the
    /// years, sub-second parts of every width, and a leap second.
    #[test]
    fn sqlite_time_text_is_chronos_format() {
        use chrono::{NaiveDate, TimeZone as _};
        let mut times: Vec<DateTime<Utc>> = [0_i64, 1, 59, 86_399, 951_782_400, 1_798_761_599]
            .into_iter()
            .flat_map(|secs| {
                [0_u32, 1_000, 999_999_000, 123_456_789, 999]
                    .into_iter()
                    .map(move |nanos| Utc.timestamp_opt(secs, nanos).single().expect("a time"))
            })
            .collect();
        times.push(now());
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
            .expect("a leap second");
        times.push(Utc.from_utc_datetime(&leap));
        times.push(
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .expect("a time"),
        );
        times.push(
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
                .single()
                .expect("a time"),
        );
        for t in times {
            assert_eq!(
                sqlite_time_text(&t),
                t.format(SQLITE_TIME_FORMAT).to_string(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn sqlite_time_text_is_fixed_width_and_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("valid time")
            .with_timezone(&Utc);
        assert_eq!(sqlite_time_text(&t), "2026-01-02T03:04:05.000000Z");
        let n = now();
        let back = DateTime::parse_from_rfc3339(&sqlite_time_text(&n))
            .expect("parses")
            .with_timezone(&Utc);
        assert_eq!(back, n);
    }
}
