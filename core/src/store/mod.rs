//! The SQL store: the meter registry, meter credentials and connectivity, API keys,
//! alerts with their lifecycle, alert delivery (event feed, subscriptions, outbox),
//! forecasts, the temperatures forecasting may use, tariffs and bills.
//!
//! One implementation over sqlx's `Any` driver: SQLite (default, a file in the data
//! directory) or PostgreSQL (`store.url = "postgres://…"`), with the same migrations
//! (`core/migrations/`) and the same queries. Queries use `$1, $2, …` placeholders in order of
//! first appearance, which both drivers bind by number; instants are stored as microseconds
//! since the epoch and dates as ISO text, the types both databases share.

pub mod alerts;
pub mod bills;
pub mod forecasts;
pub mod keys;
pub mod meters;
pub mod secret;
pub mod tariffs;
pub mod temperatures;
#[cfg(test)]
mod tests;
pub mod webhooks;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// Section `[store]` of `meterstack.toml`: the SQL store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`; empty means the SQLite file
    /// `meterstack.db` in the data directory.
    pub url: String,
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long a query may wait for a pooled connection.
    #[serde(with = "crate::duration")]
    pub acquire_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of the SQL store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot open the SQL store {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate the SQL store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("SQL store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// The named row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The row already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// Input that cannot be stored, with the reason.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::records::UnknownName> for StoreError {
    fn from(e: crate::records::UnknownName) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the SQL store; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// SQLite (else PostgreSQL).
    sqlite: bool,
    /// Bumped after every commit that appends alert events or queues deliveries, so waiters
    /// in this process (the pull API, the webhook dispatcher) wake at once.
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl StoreConfig {
    /// The URL to connect to: `url`, or the SQLite file in `data_dir`.
    pub fn effective_url(&self, data_dir: &Path) -> String {
        if self.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("meterstack.db").display()
            )
        } else {
            self.url.clone()
        }
    }

    /// Connects, and applies pending migrations.
    pub async fn build(&self, data_dir: &Path) -> Result<SqlStore> {
        install_default_drivers();
        let url = self.effective_url(data_dir);
        let sqlite = url.starts_with("sqlite:");
        let connect_error = |source| StoreError::Connect {
            url: redact(&url),
            source,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            .acquire_timeout(self.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets the CLI and a running server share the file; the busy
                        // timeout makes writers wait for each other instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(connect_error)?;
        MIGRATOR.run(&pool).await?;
        Ok(SqlStore {
            pool,
            sqlite,
            changes: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }
}

impl SqlStore {
    /// The connection pool, for queries of other modules.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so it waits for other writers (the busy timeout) instead of
    /// failing with SQLITE_BUSY when it reads first and another writer commits meanwhile.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            self.pool.begin().await?
        })
    }

    /// Wakes this process's waiters for alert events and deliveries.
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever this process commits alert events or deliveries.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Now, in microseconds since the epoch.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Microseconds since the epoch as a UTC instant.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}
