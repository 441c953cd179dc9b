//! Both store back-ends for a test: a SQLite file in a temporary directory, and a fresh database
//! on the test process's PostgreSQL cluster (skipped loudly when PostgreSQL is not installed).

#![allow(dead_code)]

use super::postgres;

pub struct Backend {
    pub url: String,
    pub postgres: bool,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            postgres: false,
            _dir: Some(dir),
        }
    }

    /// `None` after a loud SKIP when PostgreSQL is missing (a panic under `CI=true`).
    pub fn postgres() -> Option<Self> {
        Some(Self {
            url: postgres::fresh_database()?,
            postgres: true,
            _dir: None,
        })
    }

    /// Reads one number behind the gateway's back (the same SQL on both back-ends).
    pub async fn count(&self, sql: &str) -> i64 {
        if self.postgres {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }

    /// Reads one column of bytes per row behind the gateway's back (`sqlite` selects a BLOB or
    /// TEXT, `postgres` a `bytea`, e.g. `convert_to(text_column, 'UTF8')`).
    pub async fn bytes(&self, sqlite: &str, postgres: &str) -> Vec<Vec<u8>> {
        if self.postgres {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let rows = sqlx::query_scalar(postgres).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            let rows = sqlx::query_scalar(sqlite).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }

    /// Runs a statement behind the gateway's back (the SQL differs per back-end when needed).
    pub async fn execute(&self, sqlite: &str, postgres: &str) {
        if self.postgres {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(postgres).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query(sqlite).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Defines `<name>::sqlite` and `<name>::postgres`, the same test body on each back-end.
macro_rules! on_both {
    ($name:ident, |$backend:ident : Backend| async move $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let $backend = $crate::backends::Backend::sqlite();
                $body
            }

            #[actix_web::test]
            async fn postgres() {
                let Some($backend) = $crate::backends::Backend::postgres() else {
                    return;
                };
                $body
            }
        }
    };
}
pub(crate) use on_both;
