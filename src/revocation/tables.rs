//! Finding this database's revocation tables, their owner, and whether the triggers the
//! caches and the shared filter rely on are exactly as the extension created them.

use std::hash::{Hash, Hasher};

use pg_session_auth_core::revocation_filter::slot::Incarnation;
use pgrx::pg_sys;

use crate::pg::owner_spi;

/// The revocation tables of the current database, as one generation of answers found them.
#[derive(Clone, Copy, Default)]
pub struct Tables {
    /// `revoked_sessions`, `revoked_users`, `revoked_tokens`.
    pub oids: [pg_sys::Oid; 3],
    pub owner: pg_sys::Oid,
    /// Whether the tables' triggers all fire always. Caches and the shared filter rely on
    /// them; when one is disabled, nothing is cached and every token is looked up.
    pub triggers_intact: bool,
    /// Changes whenever a trigger on the tables is created, altered (disabled, enabled) or
    /// dropped: a filter built under other triggers may lack keys written meanwhile.
    pub triggers_version: u64,
    /// Whether `revoked_users` keys cut-offs by issuer (not yet in a database at 0.2.0).
    pub cutoffs_per_issuer: bool,
}

/// The tables, their owner and whether their triggers are intact.
///
/// Intact means: the three triggers of each table exist exactly as `sql/finalize.sql` creates
/// them (same timing, level and events — `tgtype` 60: AFTER INSERT OR DELETE OR UPDATE OR
/// TRUNCATE FOR EACH STATEMENT, fired `ALWAYS`; 29: AFTER INSERT OR DELETE OR UPDATE FOR EACH
/// ROW, fired in `REPLICA` mode, for logical replication; 21: AFTER INSERT OR UPDATE FOR EACH
/// ROW, fired `ALWAYS` — no `WHEN`, no columns, no transition tables, same arguments) and call
/// the extension's own C functions.
/// (Catalog columns, not deparsed text, which `quote_all_identifiers` would change.) The
/// version covers every trigger on the tables and both functions, so any change to them is
/// noticed (the filter is then rebuilt before it is used again).
pub fn find_tables() -> Tables {
    struct Row {
        name: Option<String>,
        oid: Option<pg_sys::Oid>,
        owner: Option<pg_sys::Oid>,
        intact_triggers: Option<i64>,
        trigger_versions: Option<String>,
        function_versions: Option<String>,
        has_issuer: Option<bool>,
    }
    let rows = owner_spi::select(
        None,
        include_str!("../queries/revocation_tables.sql"),
        &[],
        |row| Row {
            name: row.get(0),
            oid: row.get(1),
            owner: row.get(2),
            intact_triggers: row.get(3),
            trigger_versions: row.get(4),
            function_versions: row.get(5),
            has_issuer: row.get(6),
        },
    );
    let mut tables = Tables {
        triggers_intact: true,
        ..Tables::default()
    };
    let mut versions = std::collections::hash_map::DefaultHasher::new();
    let mut found = 0;
    for row in &rows {
        let index = match row.name.as_deref() {
            Some("revoked_sessions") => 0,
            Some("revoked_users") => 1,
            _ => 2,
        };
        let (Some(oid), Some(owner)) = (row.oid, row.owner) else {
            continue;
        };
        tables.oids[index] = oid;
        tables.owner = owner;
        tables.triggers_intact &= row.intact_triggers == Some(3);
        if index == 1 {
            tables.cutoffs_per_issuer = row.has_issuer == Some(true);
        }
        (index, &row.trigger_versions, &row.function_versions).hash(&mut versions);
        found += 1;
    }
    if found != 3 {
        // Verification must not go on as if nothing were revoked.
        crate::errors::raise(crate::errors::Failure::MissingTables {
            what: "the revocation tables are",
        });
    }
    tables.triggers_version = versions.finish();
    tables
}

impl Tables {
    /// What a filter built from these tables is valid for.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            tables: self.oids.map(pg_sys::Oid::to_u32),
            triggers_version: self.triggers_version,
        }
    }
}
