//! The bench's accounts, written straight into the app's SQLite database with the app's
//! own queries: one broadcaster per live (its live started) and signed-in senders with
//! session tokens the load tool puts in its `Cookie` header.

use anyhow::{Context, anyhow};
use privatehub_app::auth::session::{hash_token, new_token};
use privatehub_app::db::{self, lives, sessions, users};
use privatehub_app::domain::{LiveTitle, Username};
use privatehub_app::settings::parse_database_url;
use serde::{Deserialize, Serialize};

/// A placeholder no password hashes to: bench accounts never log in.
const NO_PASSWORD: &str = "bench-account-without-password";

/// What the load tool needs: per live, the channel and its senders' session tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub lives: Vec<PlannedLive>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedLive {
    pub channel: String,
    pub sender_tokens: Vec<String>,
}

/// Creates `lives` live broadcasters and `senders_per_live` senders for each, in the
/// database `database` (a SQLite path or a `postgres://` URL, as `DATABASE_URL`;
/// migrated first, so the app may start on it afterwards or already run on it).
/// Rerunnable: a name already taken gets a fresh suffix.
pub fn prepare(database: &str, lives: usize, senders_per_live: usize) -> anyhow::Result<Plan> {
    let location = parse_database_url(database).map_err(|error| anyhow!("--database: {error}"))?;
    let pool = db::build_pool(&location, db::PoolOptions::default())
        .map_err(|error| anyhow!("open {}: {error}", location.display_for_log()))?;
    db::run_migrations(&pool).map_err(|error| anyhow!("migrate: {error}"))?;
    let mut connection = pool.get().context("database connection")?;
    let now = db::now_unix();
    let run: u32 = rand::random::<u32>() % 100_000;
    let title = LiveTitle::parse("Chat bench").map_err(|error| anyhow!("{error}"))?;
    let mut planned = Vec::with_capacity(lives);
    for live in 0..lives {
        let channel = format!("cb{run}l{live}");
        let broadcaster = create_user(&mut connection, &channel, now)?;
        lives::start_or_get_current(
            &mut connection,
            broadcaster,
            &title,
            lives::LiveSource::Browser,
            now,
        )
        .context("start the bench live")?;
        let mut sender_tokens = Vec::with_capacity(senders_per_live);
        for sender in 0..senders_per_live {
            let user = create_user(&mut connection, &format!("cb{run}l{live}s{sender}"), now)?;
            let token = new_token();
            sessions::create_session(
                &mut connection,
                user,
                &hash_token(&token),
                now,
                now + 86_400,
            )
            .context("create a bench session")?;
            sender_tokens.push(token);
        }
        planned.push(PlannedLive {
            channel,
            sender_tokens,
        });
    }
    Ok(Plan { lives: planned })
}

fn create_user(
    connection: &mut db::AnyConnection,
    name: &str,
    now: i64,
) -> anyhow::Result<users::UserId> {
    let username = Username::parse(name).map_err(|error| anyhow!("{name}: {error}"))?;
    let user = users::create_user(connection, &username, NO_PASSWORD, now)
        .map_err(|error| anyhow!("create {name}: {error:?}"))?;
    Ok(user.id)
}
