-- deskwire broker store, schema 6: whether a group's technicians may choose the customer's
-- credentials for unattended access (1) or must present the target's admin credentials at
-- each connection (0).
ALTER TABLE tech_groups ADD COLUMN customer_credentials BIGINT NOT NULL DEFAULT 1;
