-- deskwire broker store, schema 5: the broker's copy of unattended-access grants, as the
-- devices report them (signed with their device key), so the broker checks a grant's
-- window at its own clock before it calls a device's agent. The device checks its own copy
-- too: this one never lets anyone in by itself.
CREATE TABLE grants (
    device TEXT NOT NULL,
    grant_id BIGINT NOT NULL,
    technician TEXT NOT NULL,
    record TEXT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (device, grant_id)
);
