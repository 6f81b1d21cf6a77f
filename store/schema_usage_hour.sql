-- keygate schema, version 2 (both engines): usage rows by hour, so rows past
-- the retention period are found without reading every key's history.
CREATE INDEX usage_hour ON usage (hour);
CREATE INDEX usage_ips_hour ON usage_ips (hour);
