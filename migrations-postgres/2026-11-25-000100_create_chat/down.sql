DROP TABLE chat_bans;
DROP TABLE chat_messages;
