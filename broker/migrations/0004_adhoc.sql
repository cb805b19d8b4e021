-- deskwire broker store, schema 4: the ad-hoc support sessions, so a broker restart ends
-- none of them. One row: the whole book as its own JSON (digests of invitation tokens and
-- codes only, never the secrets) and the digests of the temporary hosts' re-attach tokens.
CREATE TABLE adhoc_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    book TEXT NOT NULL,
    host_tokens TEXT NOT NULL,
    saved_at BIGINT NOT NULL
);
