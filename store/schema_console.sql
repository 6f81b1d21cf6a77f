-- keygate schema, version 4 (both engines): what the web console shares
-- between the gateways of one store, so that a person's next request may
-- reach any of them. console_secrets holds the key of the console's form
-- tokens; console_flashes holds what one page hands to the next after a
-- redirect (a new key to show once, messages), sealed with a key only the
-- person's browser holds, for a few minutes at most.
CREATE TABLE console_secrets (
	name  TEXT NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE console_flashes (
	id         TEXT   NOT NULL PRIMARY KEY,
	expires_at BIGINT NOT NULL,
	data       TEXT   NOT NULL
);
