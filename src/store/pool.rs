//! Opening the database: an external server from `DATABASE_URL`, or the
//! managed local cluster. Migrations run on every open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::local_pg::{self, LocalCluster};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct Database {
    pub pool: PgPool,
    cluster: Option<LocalCluster>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's options hold the URL, which may carry a password.
        formatter
            .debug_struct("Database")
            .field("managed", &self.cluster.is_some())
            .finish()
    }
}

impl Database {
    /// Connects to `database_url`, or starts the managed cluster in
    /// `data_dir/postgres` when it is `None`; then migrates.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Database> {
        let (url, cluster) = match database_url {
            Some(url) => (url.to_string(), None),
            None => {
                let directory = data_dir.join("postgres");
                let cluster = tokio::task::spawn_blocking(move || -> anyhow::Result<LocalCluster> {
                    let mut cluster = LocalCluster::new(&directory)?;
                    cluster.start()?;
                    Ok(cluster)
                })
                .await??;
                ensure_database(&cluster.url("postgres"), local_pg::DATABASE).await?;
                (cluster.url(local_pg::DATABASE), Some(cluster))
            }
        };
        let pool = connect(&url).await?;
        MIGRATOR.run(&pool).await.context("running database migrations")?;
        Ok(Database { pool, cluster })
    }

    /// Closes connections and stops the managed cluster if this process started it.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(mut cluster) = self.cluster.take() {
            tokio::task::spawn_blocking(move || cluster.stop_if_started_here()).await??;
        }
        Ok(())
    }
}

pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
    // Named in pg_stat_activity and the server's log, unless the URL names it.
    if !url.contains("application_name=") {
        options = options.application_name("personas");
    }
    let options = options
        .log_statements(tracing::log::LevelFilter::Trace)
        // Catching up on a large history legitimately runs statements of a
        // second or more; only far slower ones deserve a warning.
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(10));
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL")
}

/// Creates `database` on the server behind `maintenance_url` if it does not exist.
pub async fn ensure_database(maintenance_url: &str, database: &str) -> anyhow::Result<()> {
    let pool = connect(maintenance_url).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&pool)
        .await?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        // Two processes may race to create it; losing that race is fine.
        if let Err(error) = sqlx::query(&statement).execute(&pool).await {
            let duplicate = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !duplicate {
                return Err(error).context("creating the database");
            }
        }
    }
    pool.close().await;
    Ok(())
}
