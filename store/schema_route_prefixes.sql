-- keygate schema, version 5 (both engines): the key prefixes gateways on
-- this store accept, so `caddy keys issue` gives a new key the prefix of
-- the routes it is for. Gateways refresh seen_at while they run.
CREATE TABLE route_prefixes (
	prefix  TEXT   NOT NULL PRIMARY KEY,
	seen_at BIGINT NOT NULL
);
