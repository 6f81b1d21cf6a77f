-- keygate schema, version 1.
--
-- The PostgreSQL store keeps the same logical schema: BLOB is BYTEA, INTEGER
-- times are BIGINT unix nanoseconds (UTC), AUTOINCREMENT is BIGSERIAL or an
-- identity column, and the 0/1 flags may be BOOLEAN. List columns hold JSON
-- arrays as text so both engines read them the same way.

-- One row per key. Only the SHA-256 digest of the key is kept, never the key.
CREATE TABLE keys (
	id                 TEXT    PRIMARY KEY,
	digest             BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
	hint               TEXT    NOT NULL DEFAULT '',
	name               TEXT    NOT NULL DEFAULT '',
	owner              TEXT    NOT NULL DEFAULT '',
	env                TEXT    NOT NULL,
	scopes             TEXT    NOT NULL DEFAULT '[]',
	rate               TEXT,               -- "100/m", NULL = route default
	burst              INTEGER NOT NULL DEFAULT 0,
	allowed_ips        TEXT    NOT NULL DEFAULT '[]',
	sender_domains     TEXT    NOT NULL DEFAULT '[]',
	quota              TEXT,               -- "1000/d", NULL = route default
	max_recipients     INTEGER NOT NULL DEFAULT 0,
	allow_on_behalf_of INTEGER NOT NULL DEFAULT 0,
	created_at         INTEGER NOT NULL,
	expires_at         INTEGER,
	revoked_at         INTEGER,
	revoke_reason      TEXT    NOT NULL DEFAULT '',
	disabled           INTEGER NOT NULL DEFAULT 0,
	last_used_at       INTEGER,
	last_ip            TEXT    NOT NULL DEFAULT '',
	rotated_from       TEXT    NOT NULL DEFAULT '',
	rotated_to         TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX keys_created_at ON keys (created_at);
CREATE INDEX keys_owner ON keys (owner, created_at);

-- The change log gateways poll to invalidate their caches. AUTOINCREMENT so a
-- sequence number is never reused, even after the newest row is deleted.
CREATE TABLE changes (
	seq    INTEGER PRIMARY KEY AUTOINCREMENT,
	digest BLOB    NOT NULL,
	at     INTEGER NOT NULL
);

-- The append-only audit log. It never holds a key or a digest.
CREATE TABLE events (
	seq    INTEGER PRIMARY KEY AUTOINCREMENT,
	at     INTEGER NOT NULL,
	action TEXT    NOT NULL,
	key_id TEXT    NOT NULL,
	actor  TEXT    NOT NULL DEFAULT '',
	reason TEXT    NOT NULL DEFAULT '',
	detail TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX events_key_id ON events (key_id, seq);

-- Hourly counters per key and metric ("allowed", "denied.<code>",
-- "recipients", "status.2xx" …). Writers only ever add to n.
CREATE TABLE usage (
	key_id TEXT    NOT NULL,
	hour   INTEGER NOT NULL,
	metric TEXT    NOT NULL,
	n      INTEGER NOT NULL,
	PRIMARY KEY (key_id, hour, metric)
) WITHOUT ROWID;

-- Hourly requests per key and client IP.
CREATE TABLE usage_ips (
	key_id TEXT    NOT NULL,
	hour   INTEGER NOT NULL,
	ip     TEXT    NOT NULL,
	n      INTEGER NOT NULL,
	PRIMARY KEY (key_id, hour, ip)
) WITHOUT ROWID;
