-- cloud-sync PostgreSQL schema, version 1. The layout and its invariants are
-- drawn in src/store/postgres/mod.rs; docs/grafana.md charts these tables.
-- Ids and names sort bytewise (COLLATE "C"), like the sled store's keys.

-- One row per gateway: its latest batch and running totals.
CREATE TABLE gateways (
    gateway_id  text COLLATE "C" PRIMARY KEY,
    spool_id    text COLLATE "C" NOT NULL,
    last_sync   timestamptz NOT NULL,
    backlog     bigint NOT NULL,
    batches     bigint NOT NULL,
    accepted    bigint NOT NULL,
    duplicates  bigint NOT NULL
);

-- One row per stored batch: the history of every gateway's backlog.
CREATE TABLE syncs (
    gateway_id  text COLLATE "C" NOT NULL,
    synced_at   timestamptz NOT NULL,
    spool_id    text COLLATE "C" NOT NULL,
    backlog     bigint NOT NULL,
    envelopes   bigint NOT NULL,
    accepted    bigint NOT NULL,
    duplicates  bigint NOT NULL
);
CREATE INDEX syncs_gateway_time ON syncs (gateway_id, synced_at);

-- One row per device: the gateway and time of its latest envelope.
CREATE TABLE devices (
    device_id   text COLLATE "C" PRIMARY KEY,
    gateway_id  text COLLATE "C" NOT NULL,
    last_seen   timestamptz NOT NULL,
    documents   bigint NOT NULL
);

-- One row per series of a device, with its number of points.
CREATE TABLE measurements (
    device_id   text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    points      bigint NOT NULL,
    PRIMARY KEY (device_id, name)
);

-- The dedup key: one row per envelope ever stored.
CREATE TABLE envelopes (
    gateway_id  text COLLATE "C" NOT NULL,
    spool_id    text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (gateway_id, spool_id, seq)
);

-- One row per reading. time keeps microseconds, nanos the rest, so that
-- (device_id, name, time, nanos) is the point identity at full precision.
CREATE TABLE points (
    device_id   text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    time        timestamptz NOT NULL,
    nanos       smallint NOT NULL DEFAULT 0 CHECK (nanos BETWEEN 0 AND 999),
    value_f64   double precision,
    value_bool  boolean,
    value_text  text,
    value_bytes bytea,
    unit        text,
    gateway_id  text COLLATE "C" NOT NULL,
    spool_id    text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    CONSTRAINT points_one_value
        CHECK (num_nonnulls(value_f64, value_bool, value_text, value_bytes) = 1),
    PRIMARY KEY (device_id, name, time, nanos)
);

-- Envelopes whose payload is not SenML, kept as they came.
CREATE TABLE documents (
    gateway_id  text COLLATE "C" NOT NULL,
    spool_id    text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('opaque', 'invalid')),
    reason      text NOT NULL,
    payload     bytea NOT NULL,
    PRIMARY KEY (gateway_id, spool_id, seq)
);
CREATE INDEX documents_device_time ON documents (device_id, received_at);

-- With TimescaleDB (CREATE EXTENSION timescaledb before the first start),
-- points becomes a hypertable partitioned by time; without it, a BRIN index
-- serves fleet-wide time ranges (Grafana panels over every device).
DO $$
DECLARE
    timescale_schema name;
BEGIN
    SELECT n.nspname INTO timescale_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb';
    IF timescale_schema IS NOT NULL THEN
        EXECUTE format('SELECT %I.create_hypertable(%L::regclass, %L::name)',
                       timescale_schema, quote_ident(current_schema()) || '.points', 'time');
    ELSE
        CREATE INDEX points_time_brin ON points USING brin (time);
    END IF;
END
$$;
