-- The shapes real databases have, in one database: several schemas, views and materialized views (one created
-- WITH NO DATA, as public sample databases ship them), a partitioned table, domains and enums, legacy sequences
-- that feed a column only through DEFAULT nextval(...) (never OWNED BY), a sequence shared by two tables, a
-- table without any key, and hostile names: spaces, quotes, semicolons, %, {}, backslashes, unicode, digits
-- first, mixed case and a 63-byte name.
CREATE SCHEMA sales;
CREATE SCHEMA "Reporting Area";
CREATE DOMAIN sales.positive_money AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE TYPE sales.order_state AS ENUM ('new', 'paid', 'shipped', 'cancelled');

-- Legacy sequences: created on their own and named in a DEFAULT, the way pre-serial schemas and many loading
-- scripts do it.
CREATE SEQUENCE sales.customer_seq;
CREATE SEQUENCE sales.shared_ids;
CREATE TABLE sales.customer (
    customer_id integer PRIMARY KEY DEFAULT nextval('sales.customer_seq'),
    "Full Name" text NOT NULL,
    country text
);
CREATE TABLE sales."order" (
    order_id bigint PRIMARY KEY DEFAULT nextval('sales.shared_ids'),
    customer_id integer NOT NULL REFERENCES sales.customer,
    state sales.order_state NOT NULL DEFAULT 'new',
    total sales.positive_money NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE TABLE sales.refund (
    refund_id bigint PRIMARY KEY DEFAULT nextval('sales.shared_ids'),
    order_id bigint NOT NULL REFERENCES sales."order",
    amount sales.positive_money NOT NULL
);
-- A text key built from a sequence: there is no max() to compare the sequence with.
CREATE SEQUENCE sales.ticket_seq;
CREATE TABLE sales.ticket (code text PRIMARY KEY DEFAULT 'T-' || nextval('sales.ticket_seq'), note text);

-- Partitioned by month.
CREATE TABLE sales.payment (
    payment_id bigint GENERATED ALWAYS AS IDENTITY,
    order_id bigint NOT NULL REFERENCES sales."order",
    paid_on date NOT NULL,
    amount numeric(12, 2) NOT NULL,
    PRIMARY KEY (payment_id, paid_on)
) PARTITION BY RANGE (paid_on);
CREATE TABLE sales.payment_2025 PARTITION OF sales.payment FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE sales.payment_2026 PARTITION OF sales.payment FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

-- No key at all (logs, staging tables).
CREATE TABLE public.import_log (line text, loaded_at timestamptz DEFAULT now());

-- Hostile names.
CREATE TABLE "Reporting Area"."Daily Totals; 100% {net}" (
    "Day" date PRIMARY KEY,
    "Amount \ Net" numeric,
    "ünïcödé ✓" text
);
CREATE TABLE "Reporting Area"."quote""d table" (
    id serial PRIMARY KEY,
    "Daily Day" date REFERENCES "Reporting Area"."Daily Totals; 100% {net}" ("Day")
);
CREATE TABLE public."2019" (overall_rank integer PRIMARY KEY, name text);
CREATE TABLE public."a_table_name_that_is_exactly_sixty_three_bytes_long_in_total_xy" (
    "a column name that is exactly sixty-three bytes long as well!!!" integer PRIMARY KEY
);

CREATE VIEW sales.order_overview AS
    SELECT o.order_id, c."Full Name", o.state, o.total FROM sales."order" o JOIN sales.customer c USING (customer_id);
CREATE MATERIALIZED VIEW "Reporting Area".monthly AS
    SELECT date_trunc('month', placed_at) AS month, count(*) AS orders, sum(total) AS total
    FROM sales."order" GROUP BY 1;
CREATE UNIQUE INDEX monthly_month ON "Reporting Area".monthly (month);
-- Shipped WITH NO DATA, as public sample databases often are: a faithful restore leaves it unpopulated too.
CREATE MATERIALIZED VIEW "Reporting Area".country_totals AS
    SELECT c.country, sum(o.total) AS total FROM sales."order" o JOIN sales.customer c USING (customer_id)
    GROUP BY 1 WITH NO DATA;
CREATE UNIQUE INDEX country_totals_country ON "Reporting Area".country_totals (country);

INSERT INTO sales.customer ("Full Name", country)
SELECT 'Customer ' || g, (ARRAY['TW', 'JP', 'DE'])[1 + g % 3] FROM generate_series(1, 300) g;
INSERT INTO sales."order" (customer_id, state, total, placed_at)
SELECT 1 + g % 300, (ARRAY['new', 'paid', 'shipped']::sales.order_state[])[1 + g % 3], (g % 500) + 0.99,
       timestamptz '2025-06-01 00:00:00+00' + g * interval '37 minutes'
FROM generate_series(1, 2000) g;
INSERT INTO sales.refund (order_id, amount) SELECT g * 10, 1.50 FROM generate_series(1, 50) g;
INSERT INTO sales.ticket (note) SELECT 'note ' || g FROM generate_series(1, 20) g;
INSERT INTO sales.payment (order_id, paid_on, amount)
SELECT g, date '2025-06-01' + (g % 400), (g % 500) + 0.99 FROM generate_series(1, 1500) g;
INSERT INTO public.import_log (line) SELECT 'line ' || g FROM generate_series(1, 100) g;
INSERT INTO public.import_log (line) SELECT 'line ' || g FROM generate_series(1, 5) g;  -- duplicates: no key
INSERT INTO "Reporting Area"."Daily Totals; 100% {net}"
SELECT d::date, 10.5, 'ok' FROM generate_series(date '2025-01-01', date '2025-03-31', interval '1 day') d;
INSERT INTO "Reporting Area"."quote""d table" ("Daily Day") SELECT date '2025-01-01' + g FROM generate_series(0, 30) g;
INSERT INTO public."2019" SELECT g, 'rank ' || g FROM generate_series(1, 156) g;
INSERT INTO public."a_table_name_that_is_exactly_sixty_three_bytes_long_in_total_xy" VALUES (1), (2);
REFRESH MATERIALIZED VIEW "Reporting Area".monthly;
ANALYZE;
