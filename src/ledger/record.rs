//! The ledger's records, each field listed once: the struct, its SQL columns, how it is written
//! and how it is read back (SQLite and PostgreSQL) all come from one `columns!` list per table.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Declares a struct whose fields are table columns of the same name, with the column list and
/// the conversions to and from a row.
macro_rules! columns {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $name {
            /// Its columns, in declaration order.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Its values, in [`Self::COLUMNS`] order.
            pub(super) fn values(&self) -> Vec<&dyn ToSql> {
                vec![$(&self.$field),*]
            }

            /// Reads it from a row that has its columns (by name; other columns are ignored).
            pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok($name { $($field: r.get(stringify!($field))?,)* })
            }

            /// Its values as PostgreSQL parameters, in [`Self::COLUMNS`] order.
            pub(super) fn pg_values(&self) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
                vec![$(PgColumn::to_pg(&self.$field)),*]
            }

            /// Reads it from a PostgreSQL row that has its columns.
            pub(super) fn pg_read(r: &postgres::Row) -> Result<Self, postgres::Error> {
                Ok($name { $($field: PgColumn::from_pg(r, stringify!($field))?,)* })
            }
        }
    };
}

columns! {
    /// A finished request as the server saw it: what it asked, what it got, what it took.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Record {
        id: String,
        endpoint: String,
        model: String,
        quantization: String,
        device: String,
        outcome: Outcome,
        finish_reason: Option<String>,
        prompt_tokens: u64,
        cached_tokens: u64,
        generated_tokens: u64,
        queue_ms: f64,
        ttft_ms: Option<f64>,
        total_ms: f64,
        /// This request's share of the engine's busy time.
        busy_s: f64,
        energy_j: f64,
        /// How `energy_j` was measured (`rapl` or `estimate`).
        energy_method: String,
        api_key_hash: Option<String>,
        /// Tool calls in the answer (all choices).
        tool_calls: u64,
        /// The model name the client sent, when it differs from `model` (the one that served).
        asked_model: Option<String>,
    }
}

columns! {
    /// What the ledger adds when it stores a [`Record`]: when, and its local cost.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Priced {
        #[serde(rename = "time_ms")]
        ts_ms: i64,
        local_cost: f64,
        local_currency: String,
        price_version: String,
        /// The server that answered (`--instance-id`); absent in rows from before fleets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance_id: Option<String>,
    }
}

columns! {
    /// One comparator's price for one request, in its own currency.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct CloudRow {
        comparator: String,
        prompt_tokens: u64,
        cached_tokens: u64,
        completion_tokens: u64,
        amount: f64,
        currency: String,
        /// Token counts are hearth's own, not the provider's tokenizer's.
        estimate: bool,
    }
}

/// One stored request: the record, its price and its cloud equivalents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    #[serde(flatten)]
    pub record: Record,
    #[serde(flatten)]
    pub priced: Priced,
    pub cloud: Vec<CloudRow>,
}

/// Sums over a group of stored requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub generated_tokens: u64,
    pub energy_j: f64,
    pub busy_s: f64,
}

impl Totals {
    /// The SQL aggregates that give these fields, in field order.
    pub(super) const SELECT: &'static str = "count(*), sum(prompt_tokens), sum(cached_tokens), sum(generated_tokens), sum(energy_j), sum(busy_s)";

    /// Adds the aggregates read from `r`, [`Self::SELECT`]'s first at column `at`.
    pub(super) fn add(&mut self, r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<()> {
        self.requests += r.get::<_, u64>(at)?;
        self.prompt_tokens += r.get::<_, u64>(at + 1)?;
        self.cached_tokens += r.get::<_, u64>(at + 2)?;
        self.generated_tokens += r.get::<_, u64>(at + 3)?;
        self.energy_j += r.get::<_, f64>(at + 4)?;
        self.busy_s += r.get::<_, f64>(at + 5)?;
        Ok(())
    }

    /// [`Self::add`] for PostgreSQL, whose sums of `BIGINT` are `NUMERIC`: [`Self::PG_SELECT`].
    pub(super) const PG_SELECT: &'static str =
        "count(*), sum(prompt_tokens)::BIGINT, sum(cached_tokens)::BIGINT, sum(generated_tokens)::BIGINT, sum(energy_j), sum(busy_s)";

    pub(super) fn pg_add(&mut self, r: &postgres::Row, at: usize) -> Result<(), postgres::Error> {
        let count = |i: usize| r.try_get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0).max(0) as u64);
        self.requests += count(at)?;
        self.prompt_tokens += count(at + 1)?;
        self.cached_tokens += count(at + 2)?;
        self.generated_tokens += count(at + 3)?;
        self.energy_j += r.try_get::<_, Option<f64>>(at + 4)?.unwrap_or(0.0);
        self.busy_s += r.try_get::<_, Option<f64>>(at + 5)?.unwrap_or(0.0);
        Ok(())
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every choice ended by itself (end of text or a stop string).
    Ok,
    /// A length limit cut a choice short (max_tokens or the context).
    Stopped,
    /// The client left before the end.
    Cancelled,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Ok, Outcome::Stopped, Outcome::Cancelled, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Stopped => "stopped",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
        }
    }
}

/// A field type as a PostgreSQL column: unsigned counts are `BIGINT`, an outcome is `TEXT`.
pub(super) trait PgColumn: Sized {
    fn to_pg(&self) -> Box<dyn postgres::types::ToSql + Sync>;
    fn from_pg(r: &postgres::Row, column: &str) -> Result<Self, postgres::Error>;
}

macro_rules! pg_as_is {
    ($($t:ty),*) => {$(
        impl PgColumn for $t {
            fn to_pg(&self) -> Box<dyn postgres::types::ToSql + Sync> {
                Box::new(self.clone())
            }
            fn from_pg(r: &postgres::Row, column: &str) -> Result<Self, postgres::Error> {
                r.try_get(column)
            }
        }
    )*};
}
pg_as_is!(String, Option<String>, f64, Option<f64>, i64, bool);

impl PgColumn for u64 {
    fn to_pg(&self) -> Box<dyn postgres::types::ToSql + Sync> {
        Box::new(i64::try_from(*self).unwrap_or(i64::MAX))
    }
    fn from_pg(r: &postgres::Row, column: &str) -> Result<Self, postgres::Error> {
        r.try_get::<_, i64>(column).map(|v| v.max(0) as u64)
    }
}

impl PgColumn for Outcome {
    fn to_pg(&self) -> Box<dyn postgres::types::ToSql + Sync> {
        Box::new(self.as_str())
    }
    fn from_pg(r: &postgres::Row, column: &str) -> Result<Self, postgres::Error> {
        let s: String = r.try_get(column)?;
        // An unknown outcome (written by a newer hearth) reads as an error rather than failing the listing.
        Ok(Outcome::ALL.into_iter().find(|o| o.as_str() == s).unwrap_or(Outcome::Error))
    }
}

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Outcome {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| FromSqlError::Other(format!("unknown outcome `{s}`").into()))
    }
}
