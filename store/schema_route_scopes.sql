-- keygate schema, version 3 (both engines): the scope lines gateways on this
-- store have loaded, so key-management tools can offer scope names and warn
-- about a scope no route uses. Gateways refresh seen_at while they run.
CREATE TABLE route_scopes (
	scope   TEXT   NOT NULL,
	method  TEXT   NOT NULL DEFAULT '',
	path    TEXT   NOT NULL,
	seen_at BIGINT NOT NULL,
	PRIMARY KEY (scope, method, path)
);
