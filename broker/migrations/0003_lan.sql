-- deskwire broker store, schema 3: a LAN target this broker manages reports its current
-- remote-connection password (signed by its device key), so a technician with the `lan`
-- permission can read it here. NULL: never reported.
ALTER TABLE devices ADD COLUMN lan_password TEXT NULL;
ALTER TABLE devices ADD COLUMN lan_rotates_at BIGINT NULL;
ALTER TABLE devices ADD COLUMN lan_reported_at BIGINT NULL;
