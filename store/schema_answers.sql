-- keygate schema, version 6 (both engines): the answers of issues and
-- rotations asked with an Idempotency-Key, kept for a day, so that a script
-- repeating one after a timeout gets the key it made instead of a second
-- one. id is a hash of the idempotency key (and of who may repeat it),
-- request a keyed hash of what was asked, data the answer sealed under a key
-- derived from the idempotency key: the store never holds a key it could
-- read. Written in the transaction of the key the answer made.
CREATE TABLE idempotent_answers (
	id         TEXT   NOT NULL PRIMARY KEY,
	request    TEXT   NOT NULL,
	expires_at BIGINT NOT NULL,
	data       TEXT   NOT NULL
);
CREATE INDEX idempotent_answers_expires ON idempotent_answers (expires_at);
