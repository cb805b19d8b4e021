//! The schema migrations, compiled into the binary so a deployed broker needs no files beside
//! it. They live in `broker/migrations/` under sqlx's `<VERSION>_<DESCRIPTION>.sql` names, so
//! `sqlx migrate run` could apply them as well; sqlx records what ran in `_sqlx_migrations`.

use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyPool;

use super::StoreError;

/// (version, description, SQL), oldest first. Never edit one that has shipped: sqlx refuses a
/// database whose applied migration's checksum changed. Add a new file instead.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "store", include_str!("../../migrations/0001_store.sql")),
    (
        2,
        "resume",
        include_str!("../../migrations/0002_resume.sql"),
    ),
    (3, "lan", include_str!("../../migrations/0003_lan.sql")),
    (4, "adhoc", include_str!("../../migrations/0004_adhoc.sql")),
    (
        5,
        "grants",
        include_str!("../../migrations/0005_grants.sql"),
    ),
    (
        6,
        "customer_credentials",
        include_str!("../../migrations/0006_customer_credentials.sql"),
    ),
];

/// The migrations above as a sqlx source (sqlx's own embedding needs its `macros` feature,
/// which would compile a second copy of sqlx for the host).
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Apply every migration the database has not seen. Brokers starting together on PostgreSQL
/// are serialised by sqlx's advisory lock; sqlx takes no lock on SQLite, where a second
/// process racing the first migration of a fresh file fails and can simply be restarted.
pub(super) async fn run(pool: &AnyPool) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(pool).await?;
    Ok(())
}
