//! The `chat_messages` and `chat_bans` tables.

use super::AnyConnection;
use diesel::prelude::*;
use privatehub_protocol::LiveId;

use super::schema::{chat_bans, chat_messages, lives, users};
use super::users::UserId;

/// A stored, not deleted chat message with its author's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub live_id: LiveId,
    pub username: String,
    pub body: String,
    pub sent_at_ms: i64,
}

/// Stores a message; returns its id.
pub fn insert_message(
    connection: &mut AnyConnection,
    live: LiveId,
    author: UserId,
    body: &str,
    now_ms: i64,
) -> QueryResult<i64> {
    // The id comes from the column's default: SQLite's next rowid, or on PostgreSQL the
    // sequence the chat server also takes its ids from.
    diesel::insert_into(chat_messages::table)
        .values((
            chat_messages::live_id.eq(live.0),
            chat_messages::user_id.eq(author.0),
            chat_messages::body.eq(body),
            chat_messages::sent_at_ms.eq(now_ms),
        ))
        .returning(chat_messages::id)
        .get_result(connection)
}

/// A message to store with the id the chat server gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: i64,
    pub live: LiveId,
    pub author: UserId,
    pub body: String,
    pub sent_at_ms: i64,
}

/// Stores `messages` in one transaction. A message whose id is already stored is left
/// alone, so a batch can be retried after a failure whose outcome was unclear.
pub fn insert_messages(connection: &mut AnyConnection, messages: &[NewMessage]) -> QueryResult<()> {
    super::write_transaction(connection, |connection| {
        for message in messages {
            let row = (
                chat_messages::id.eq(message.id),
                chat_messages::live_id.eq(message.live.0),
                chat_messages::user_id.eq(message.author.0),
                chat_messages::body.eq(&message.body),
                chat_messages::sent_at_ms.eq(message.sent_at_ms),
            );
            // ON CONFLICT is not portable through `AnyConnection`: each backend its own.
            match connection {
                AnyConnection::Sqlite(sqlite) => {
                    diesel::insert_or_ignore_into(chat_messages::table)
                        .values(row)
                        .execute(sqlite)?
                }
                AnyConnection::Postgres(postgres) => diesel::insert_into(chat_messages::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(postgres)?,
            };
        }
        Ok(())
    })
}

/// The highest message id ever stored (0 for none): the chat server numbers new
/// messages from there.
pub fn max_message_id(connection: &mut AnyConnection) -> QueryResult<i64> {
    use diesel::dsl::max;
    chat_messages::table
        .select(max(chat_messages::id))
        .first::<Option<i64>>(connection)
        .map(|id| id.unwrap_or(0))
}

/// The live's last `limit` messages that are not deleted, oldest first.
pub fn recent_messages(
    connection: &mut AnyConnection,
    live: LiveId,
    limit: i64,
) -> QueryResult<Vec<StoredMessage>> {
    let mut rows = chat_messages::table
        .inner_join(users::table)
        .filter(chat_messages::live_id.eq(live.0))
        .filter(chat_messages::deleted_at_ms.is_null())
        // By time: instances sharing a database take ids in blocks, so ids of messages
        // sent on different instances are not in the order they were sent.
        .order((chat_messages::sent_at_ms.desc(), chat_messages::id.desc()))
        .limit(limit)
        .select((
            chat_messages::id,
            users::username,
            chat_messages::body,
            chat_messages::sent_at_ms,
        ))
        .load::<(i64, String, String, i64)>(connection)?;
    rows.reverse();
    Ok(rows
        .into_iter()
        .map(|(id, username, body, sent_at_ms)| StoredMessage {
            id,
            live_id: live,
            username,
            body,
            sent_at_ms,
        })
        .collect())
}

/// The live's messages that are not deleted, sent from `from_ms` to `to_ms` (both
/// included), oldest first, at most `limit`: the chat beside a replay.
pub fn messages_between(
    connection: &mut AnyConnection,
    live: LiveId,
    from_ms: i64,
    to_ms: i64,
    limit: i64,
) -> QueryResult<Vec<StoredMessage>> {
    chat_messages::table
        .inner_join(users::table)
        .filter(chat_messages::live_id.eq(live.0))
        .filter(chat_messages::deleted_at_ms.is_null())
        .filter(chat_messages::sent_at_ms.between(from_ms, to_ms))
        .order((chat_messages::sent_at_ms.asc(), chat_messages::id.asc()))
        .limit(limit)
        .select((
            chat_messages::id,
            users::username,
            chat_messages::body,
            chat_messages::sent_at_ms,
        ))
        .load::<(i64, String, String, i64)>(connection)
        .map(|rows| {
            rows.into_iter()
                .map(|(id, username, body, sent_at_ms)| StoredMessage {
                    id,
                    live_id: live,
                    username,
                    body,
                    sent_at_ms,
                })
                .collect()
        })
}

/// Marks one message of the live deleted. `false` if there was no such message.
pub fn delete_message(
    connection: &mut AnyConnection,
    live: LiveId,
    message_id: i64,
    now_ms: i64,
) -> QueryResult<bool> {
    let updated = diesel::update(
        chat_messages::table
            .filter(chat_messages::id.eq(message_id))
            .filter(chat_messages::live_id.eq(live.0))
            .filter(chat_messages::deleted_at_ms.is_null()),
    )
    .set(chat_messages::deleted_at_ms.eq(Some(now_ms)))
    .execute(connection)?;
    Ok(updated == 1)
}

/// Bans `banned` from `channel`'s chat and deletes their messages of `live`. Returns
/// the ids of the messages deleted now.
pub fn ban_user(
    connection: &mut AnyConnection,
    channel: UserId,
    banned: UserId,
    live: Option<LiveId>,
    now_ms: i64,
) -> QueryResult<Vec<i64>> {
    super::write_transaction(connection, |connection| {
        let ban = (
            chat_bans::channel_user_id.eq(channel.0),
            chat_bans::banned_user_id.eq(banned.0),
            chat_bans::created_at_ms.eq(now_ms),
        );
        match connection {
            AnyConnection::Sqlite(sqlite) => diesel::insert_or_ignore_into(chat_bans::table)
                .values(ban)
                .execute(sqlite)?,
            AnyConnection::Postgres(postgres) => diesel::insert_into(chat_bans::table)
                .values(ban)
                .on_conflict_do_nothing()
                .execute(postgres)?,
        };
        let Some(live) = live else {
            return Ok(Vec::new());
        };
        let visible = chat_messages::table
            .filter(chat_messages::live_id.eq(live.0))
            .filter(chat_messages::user_id.eq(banned.0))
            .filter(chat_messages::deleted_at_ms.is_null());
        let ids: Vec<i64> = visible.select(chat_messages::id).load(connection)?;
        diesel::update(visible)
            .set(chat_messages::deleted_at_ms.eq(Some(now_ms)))
            .execute(connection)?;
        Ok(ids)
    })
}

/// Users banned from `channel`'s chat.
pub fn banned_users(connection: &mut AnyConnection, channel: UserId) -> QueryResult<Vec<UserId>> {
    chat_bans::table
        .filter(chat_bans::channel_user_id.eq(channel.0))
        .select(chat_bans::banned_user_id)
        .load::<i64>(connection)
        .map(|ids| ids.into_iter().map(UserId).collect())
}

/// Raises the live's stored peak viewer count to `viewers` if it is higher.
pub fn raise_peak_viewers(
    connection: &mut AnyConnection,
    live: LiveId,
    viewers: u32,
) -> QueryResult<()> {
    let viewers = i32::try_from(viewers).unwrap_or(i32::MAX);
    diesel::update(
        lives::table
            .filter(lives::id.eq(live.0))
            .filter(lives::peak_viewers.lt(viewers)),
    )
    .set(lives::peak_viewers.eq(viewers))
    .execute(connection)?;
    Ok(())
}

/// `count` fresh ids from the chat messages' sequence (PostgreSQL only): unique across
/// every instance sharing the database, used by the chat server before the insert.
pub fn reserve_message_ids(connection: &mut AnyConnection, count: usize) -> QueryResult<Vec<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Reserved {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let AnyConnection::Postgres(postgres) = connection else {
        return Err(diesel::result::Error::QueryBuilderError(
            "chat ids come from a sequence only on PostgreSQL".into(),
        ));
    };
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    diesel::sql_query(
        "SELECT nextval(pg_get_serial_sequence('chat_messages', 'id')) AS id \
         FROM generate_series(1, $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(count)
    .load::<Reserved>(postgres)
    .map(|rows| rows.into_iter().map(|row| row.id).collect())
}
