ALTER TABLE lives DROP COLUMN source;
DROP TABLE stream_keys;
