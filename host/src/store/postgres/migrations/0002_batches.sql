-- Switchyard schema, version 2: batch requests in flight.
--
-- A node records each batch request here before sending it and deletes
-- the row once every delivery in it has recorded its attempt. A row left
-- by a node that died tells a live node to note, in each member's attempt
-- log, that the request may have reached the receiver (the delivery
-- itself stays due and is sent again).
CREATE TABLE batches (
    id      uuid PRIMARY KEY,
    node    uuid NOT NULL,
    ep      uuid NOT NULL,
    at_ms   bigint NOT NULL,
    events  uuid[] NOT NULL
);
