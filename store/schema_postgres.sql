-- keygate schema for PostgreSQL, version 1: the logical schema of
-- schema_sqlite.sql (times are BIGINT unix nanoseconds, lists JSON text).

CREATE TABLE keys (
	id                 TEXT    PRIMARY KEY,
	digest             BYTEA   NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
	hint               TEXT    NOT NULL DEFAULT '',
	name               TEXT    NOT NULL DEFAULT '',
	owner              TEXT    NOT NULL DEFAULT '',
	env                TEXT    NOT NULL,
	scopes             TEXT    NOT NULL DEFAULT '[]',
	rate               TEXT,
	burst              BIGINT  NOT NULL DEFAULT 0,
	allowed_ips        TEXT    NOT NULL DEFAULT '[]',
	sender_domains     TEXT    NOT NULL DEFAULT '[]',
	quota              TEXT,
	max_recipients     BIGINT  NOT NULL DEFAULT 0,
	allow_on_behalf_of BOOLEAN NOT NULL DEFAULT FALSE,
	created_at         BIGINT  NOT NULL,
	expires_at         BIGINT,
	revoked_at         BIGINT,
	revoke_reason      TEXT    NOT NULL DEFAULT '',
	disabled           BOOLEAN NOT NULL DEFAULT FALSE,
	last_used_at       BIGINT,
	last_ip            TEXT    NOT NULL DEFAULT '',
	rotated_from       TEXT    NOT NULL DEFAULT '',
	rotated_to         TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX keys_created_at ON keys (created_at);
CREATE INDEX keys_owner ON keys (owner, created_at);

CREATE TABLE changes (
	seq    BIGSERIAL PRIMARY KEY,
	digest BYTEA     NOT NULL,
	at     BIGINT    NOT NULL
);

CREATE TABLE events (
	seq    BIGSERIAL PRIMARY KEY,
	at     BIGINT NOT NULL,
	action TEXT   NOT NULL,
	key_id TEXT   NOT NULL,
	actor  TEXT   NOT NULL DEFAULT '',
	reason TEXT   NOT NULL DEFAULT '',
	detail TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX events_key_id ON events (key_id, seq);

CREATE TABLE usage (
	key_id TEXT   NOT NULL,
	hour   BIGINT NOT NULL,
	metric TEXT   NOT NULL,
	n      BIGINT NOT NULL,
	PRIMARY KEY (key_id, hour, metric)
);

CREATE TABLE usage_ips (
	key_id TEXT   NOT NULL,
	hour   BIGINT NOT NULL,
	ip     TEXT   NOT NULL,
	n      BIGINT NOT NULL,
	PRIMARY KEY (key_id, hour, ip)
);
