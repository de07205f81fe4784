-- Switchyard schema, version 1. Applied once, under the migration lock,
-- by the first node that starts on an empty database.

-- Every event, whole, under its account.
CREATE TABLE events (
    id          uuid PRIMARY KEY,          -- UUIDv7: time-ordered
    account     text NOT NULL,
    event_type  text NOT NULL,
    created_ms  bigint NOT NULL,
    source_id   text,
    payload     bytea NOT NULL,            -- the JSON document as received
    endpoints   jsonb NOT NULL             -- ids of the endpoints it was fanned out to
);
CREATE INDEX events_by_account ON events (account, id);

-- One row per (event, endpoint): the delivery record and its place in the
-- endpoint's queue (`due_ms`, NULL once final), and which node holds it
-- (`claimed_by` until `claimed_until`, Unix ms).
CREATE TABLE deliveries (
    event          uuid NOT NULL,
    ep             uuid NOT NULL,
    account        text NOT NULL,
    endpoint       text NOT NULL,
    status         text NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    due_ms         bigint,
    last_status    integer,
    last_error     text,
    updated_ms     bigint NOT NULL,
    reason         text,
    output_body    bytea,
    output_type    text,
    output_headers jsonb,
    claimed_by     uuid,
    claimed_until  bigint,
    PRIMARY KEY (event, ep)
) WITH (fillfactor = 80);
-- The queue: an endpoint's pending deliveries in due order.
CREATE INDEX deliveries_queue ON deliveries (ep, due_ms, event) WHERE due_ms IS NOT NULL;
-- A node's claims (renewal, release at shutdown).
CREATE INDEX deliveries_claims ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

-- The attempt log, append-only, deleted with its event by retention.
CREATE TABLE attempts (
    event       uuid NOT NULL,
    ep          uuid NOT NULL,
    n           integer NOT NULL,
    at_ms       bigint NOT NULL,
    status      integer,
    error       text,
    latency_us  bigint NOT NULL,
    response    bytea NOT NULL,
    batch_id    uuid,                      -- the batch request it was part of
    batch_size  integer,
    PRIMARY KEY (event, ep, n)
);

-- Idempotency keys, account-scoped; a key older than the window may be
-- taken again.
CREATE TABLE idempotency (
    account  text NOT NULL,
    key      text NOT NULL,
    event    uuid NOT NULL,
    at_ms    bigint NOT NULL,
    PRIMARY KEY (account, key)
);

-- Scheduled events and the keys that move or cancel them.
CREATE TABLE schedules (
    event         uuid PRIMARY KEY,
    account       text NOT NULL,
    due_ms        bigint NOT NULL,
    key           text,
    cancelled_ms  bigint,
    replaced_by   uuid
);
CREATE TABLE schedule_keys (
    account  text NOT NULL,
    key      text NOT NULL,
    event    uuid NOT NULL,
    PRIMARY KEY (account, key)
);

-- Endpoints created through the API, and every endpoint's health.
CREATE TABLE api_endpoints (
    account  text NOT NULL,
    id       text NOT NULL,
    body     jsonb NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE endpoint_state (
    ep               uuid PRIMARY KEY,
    disabled_reason  text,
    state            jsonb NOT NULL
);

-- What every node polls: a counter bumped whenever endpoints change or an
-- endpoint is disabled or re-enabled, so each node reloads within a second.
CREATE TABLE cluster (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint NOT NULL
);
INSERT INTO cluster VALUES (true, 1);

CREATE FUNCTION switchyard_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cluster SET version = version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER api_endpoints_changed AFTER INSERT OR UPDATE OR DELETE ON api_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard_bump();
CREATE TRIGGER endpoint_state_inserted AFTER INSERT ON endpoint_state
    FOR EACH ROW WHEN (NEW.disabled_reason IS NOT NULL) EXECUTE FUNCTION switchyard_bump();
CREATE TRIGGER endpoint_state_changed AFTER UPDATE ON endpoint_state
    FOR EACH ROW WHEN (OLD.disabled_reason IS DISTINCT FROM NEW.disabled_reason)
    EXECUTE FUNCTION switchyard_bump();

-- Nodes alive: each writes `seen_ms` every second; the live count divides
-- each endpoint's max_in_flight between them.
CREATE TABLE nodes (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    started_ms  bigint NOT NULL,
    seen_ms     bigint NOT NULL
);
