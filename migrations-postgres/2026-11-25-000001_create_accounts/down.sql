DROP TABLE sessions;
DROP TABLE users;
DROP COLLATION privatehub_nocase;
