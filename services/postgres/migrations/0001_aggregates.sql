-- Aggregates of user tags per minute bucket, as rollups (see package
-- pipeline/aggregates for why these six dimension sets).
--
-- minute: minutes since the Unix epoch; action: 0 = VIEW, 1 = BUY.
-- The primary key starts with (minute, action) so that a query is one index
-- descent per minute (minute = ANY(...)) and retention is a range on minute.
-- Dimension columns use the "C" collation: byte-wise equality and ordering,
-- the same on every node whatever the cluster's locale, and cheaper to compare.
-- fillfactor leaves room on each page so that the frequent count/sum updates
-- of a live minute stay HOT (no index update).

CREATE TABLE agg_total (
    minute    bigint   NOT NULL,
    action    smallint NOT NULL,
    count     bigint   NOT NULL,
    sum_price bigint   NOT NULL,
    PRIMARY KEY (minute, action)
) WITH (fillfactor = 80);

CREATE TABLE agg_origin (
    minute    bigint   NOT NULL,
    action    smallint NOT NULL,
    origin    text COLLATE "C" NOT NULL,
    count     bigint   NOT NULL,
    sum_price bigint   NOT NULL,
    PRIMARY KEY (minute, action, origin)
) WITH (fillfactor = 80);

CREATE TABLE agg_brand (
    minute    bigint   NOT NULL,
    action    smallint NOT NULL,
    brand_id  text COLLATE "C" NOT NULL,
    count     bigint   NOT NULL,
    sum_price bigint   NOT NULL,
    PRIMARY KEY (minute, action, brand_id)
) WITH (fillfactor = 80);

CREATE TABLE agg_category (
    minute      bigint   NOT NULL,
    action      smallint NOT NULL,
    category_id text COLLATE "C" NOT NULL,
    count       bigint   NOT NULL,
    sum_price   bigint   NOT NULL,
    PRIMARY KEY (minute, action, category_id)
) WITH (fillfactor = 80);

CREATE TABLE agg_brand_category (
    minute      bigint   NOT NULL,
    action      smallint NOT NULL,
    brand_id    text COLLATE "C" NOT NULL,
    category_id text COLLATE "C" NOT NULL,
    count       bigint   NOT NULL,
    sum_price   bigint   NOT NULL,
    PRIMARY KEY (minute, action, brand_id, category_id)
) WITH (fillfactor = 80);

-- The full cell; also answers {origin, brand} and {origin, category} by a
-- short scan of the (minute, action, origin[, brand_id]) key prefix.
CREATE TABLE agg_cell (
    minute      bigint   NOT NULL,
    action      smallint NOT NULL,
    origin      text COLLATE "C" NOT NULL,
    brand_id    text COLLATE "C" NOT NULL,
    category_id text COLLATE "C" NOT NULL,
    count       bigint   NOT NULL,
    sum_price   bigint   NOT NULL,
    PRIMARY KEY (minute, action, origin, brand_id, category_id)
) WITH (fillfactor = 80);

-- The next offset to consume of each event-log partition, written in the
-- same transaction as the deltas it covers: this is what makes the pipeline
-- exactly-once, across worker crashes, rebalances and database failovers.
CREATE TABLE offsets (
    topic       text COLLATE "C" NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);
