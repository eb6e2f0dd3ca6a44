ALTER TABLE users DROP COLUMN record_lives;
DROP TABLE recordings;
