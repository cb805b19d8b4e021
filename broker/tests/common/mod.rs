//! Databases for store tests: a SQLite file in a temp dir, or a fresh database on the test
//! binary's private PostgreSQL server.

pub mod fixtures;
pub mod postgres;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use deskwire_broker::store::Store;

/// One test's database, removed (SQLite) or abandoned with its cluster (PostgreSQL) after.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub fn sqlite(test: &str) -> Self {
        let dir = TempDir::new(test);
        let url = format!("sqlite://{}?mode=rwc", dir.0.join("store.db").display());
        Self {
            url,
            _dir: Some(dir),
        }
    }

    pub async fn postgres(test: &str) -> Self {
        let cluster = tokio::task::spawn_blocking(postgres::cluster)
            .await
            .expect("starting the cluster panicked");
        Self {
            url: cluster.create_database(test).await,
            _dir: None,
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// A raw connection pool, for looking behind the store's back (stored hashes) and for
    /// tampering with the audit log as an attacker with database access would.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("raw connect {}: {e}", self.url))
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "deskwire-store-{}-{}-{test}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
