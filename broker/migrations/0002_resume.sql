-- deskwire broker store, schema 2: a controller may re-attach to its pending code after a
-- broker restart by presenting a token issued with the code; only the token's SHA-256 (hex)
-- is kept. NULL: the code was issued without one and cannot be resumed.
ALTER TABLE codes ADD COLUMN resume_hash TEXT NULL;
