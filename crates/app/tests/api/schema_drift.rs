//! `migrations/` (SQLite) and `migrations-postgres/` must not drift apart: the same
//! versions, and once applied, the same tables with the same columns (type class and
//! nullability), the same named indexes, all matching `src/db/schema.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use privatehub_app::db::{self, AnyConnection, DatabaseLocation, PoolOptions};
use secrecy::SecretString;

use crate::helpers::shared_postgres;

/// A column as the drift check compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    class: &'static str,
    nullable: bool,
}

type Tables = BTreeMap<String, BTreeMap<String, Column>>;

fn versions(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("{}: {error}", root.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| {
            for file in ["up.sql", "down.sql"] {
                assert!(
                    entry.path().join(file).is_file(),
                    "{} has no {file}",
                    entry.path().display()
                );
            }
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

fn class_of_schema_type(diesel_type: &str) -> &'static str {
    match diesel_type {
        "BigInt" | "Integer" => "integer",
        "Text" => "text",
        "Bool" => "boolean",
        other => panic!("schema.rs type {other} has no class here: add it"),
    }
}

fn class_of_database_type(declared: &str) -> &'static str {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "int4" | "int8" => "integer",
        "text" => "text",
        "boolean" => "boolean",
        other => panic!("column type {other} has no class here: add it"),
    }
}

/// The tables of `src/db/schema.rs`, read from its `diesel::table!` blocks.
fn schema_rs() -> Tables {
    let source = include_str!("../../src/db/schema.rs");
    let mut tables = Tables::new();
    let mut current: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if let Some(name) = current.clone() {
            if line == "}" {
                current = None;
            } else if let Some((column, diesel_type)) = line.split_once(" -> ") {
                let diesel_type = diesel_type.trim_end_matches(',');
                let (nullable, inner) = match diesel_type.strip_prefix("Nullable<") {
                    Some(inner) => (true, inner.trim_end_matches('>')),
                    None => (false, diesel_type),
                };
                let column_entry = Column {
                    class: class_of_schema_type(inner),
                    nullable,
                };
                tables
                    .entry(name)
                    .or_default()
                    .insert(column.to_owned(), column_entry);
            }
        } else if line.ends_with('{') && line.contains('(') && !line.starts_with("diesel::") {
            current = Some(line.split_whitespace().next().unwrap().to_owned());
        }
    }
    assert!(tables.len() >= 7, "schema.rs parsed: {tables:?}");
    tables
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    r#type: String,
    #[diesel(sql_type = BigInt)]
    notnull: i64,
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct PostgresColumn {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

#[derive(QueryableByName)]
struct IndexName {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
}

fn names(connection: &mut AnyConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Name>(connection)
        .unwrap()
        .into_iter()
        .map(|row| row.name)
        .collect()
}

fn sqlite_tables(connection: &mut AnyConnection) -> Tables {
    let tables = names(
        connection,
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
    );
    tables
        .into_iter()
        .map(|table| {
            let columns = diesel::sql_query(format!(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{table}')"
            ))
            .load::<SqliteColumn>(connection)
            .unwrap()
            .into_iter()
            .map(|column| {
                let declared = class_of_database_type(&column.r#type);
                let entry = Column {
                    class: declared,
                    nullable: column.notnull == 0 && column.pk == 0,
                };
                (column.name, entry)
            })
            .collect();
            (table, columns)
        })
        .collect()
}

fn postgres_tables(connection: &mut AnyConnection) -> Tables {
    let tables = names(
        connection,
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name <> '__diesel_schema_migrations'",
    );
    tables
        .into_iter()
        .map(|table| {
            let columns = diesel::sql_query(format!(
                "SELECT column_name::text, data_type::text, is_nullable::text \
                 FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = '{table}'"
            ))
            .load::<PostgresColumn>(connection)
            .unwrap()
            .into_iter()
            .map(|column| {
                let entry = Column {
                    class: class_of_database_type(&column.data_type),
                    nullable: column.is_nullable == "YES",
                };
                (column.column_name, entry)
            })
            .collect();
            (table, columns)
        })
        .collect()
}

fn index_names(connection: &mut AnyConnection, sql: &str) -> BTreeSet<String> {
    diesel::sql_query(sql)
        .load::<IndexName>(connection)
        .unwrap()
        .into_iter()
        .filter_map(|row| row.name)
        .collect()
}

#[test]
fn both_migration_directories_have_the_same_versions() {
    let sqlite = versions("migrations");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, versions("migrations-postgres"));
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_schema_as_schema_rs() {
    tokio::task::spawn_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = db::build_sqlite_pool(&dir.path().join("drift.sqlite")).unwrap();
        db::run_migrations(&sqlite).unwrap();
        let url = shared_postgres().create_database("schema_drift");
        let postgres = db::build_pool(
            &DatabaseLocation::Postgres(SecretString::from(url)),
            PoolOptions::default(),
        )
        .unwrap();
        assert_eq!(
            db::run_migrations(&postgres).unwrap(),
            versions("migrations-postgres").len()
        );
        let sqlite = &mut *sqlite.get().unwrap();
        let postgres = &mut *postgres.get().unwrap();

        let expected = schema_rs();
        let on_postgres = postgres_tables(postgres);
        // SQLite has no boolean type: a `Bool` column is an INTEGER there.
        let mut expected_on_sqlite = expected.clone();
        for columns in expected_on_sqlite.values_mut() {
            for column in columns.values_mut() {
                if column.class == "boolean" {
                    column.class = "integer";
                }
            }
        }
        assert_eq!(on_postgres, expected, "PostgreSQL vs schema.rs");
        assert_eq!(
            sqlite_tables(sqlite),
            expected_on_sqlite,
            "SQLite vs schema.rs"
        );

        let sqlite_indexes = index_names(
            sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'index' \
             AND name NOT LIKE 'sqlite_autoindex_%'",
        );
        let postgres_indexes = index_names(
            postgres,
            "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = 'public' \
             AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'",
        );
        assert!(!sqlite_indexes.is_empty());
        assert_eq!(sqlite_indexes, postgres_indexes, "named indexes");
    })
    .await
    .unwrap();
}
