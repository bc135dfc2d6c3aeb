-- A database holding objects of many kinds, most of which no catalog comparison of the suite lists: the
-- inventory (pg_dump's table of contents) must notice each one's loss. Shapes of real databases around them.
CREATE SCHEMA app;
CREATE SCHEMA "My Schema";
CREATE TABLE app.doc (id serial PRIMARY KEY, body oid, name text);
INSERT INTO app.doc (body, name)
SELECT lo_from_bytea(0, convert_to('document body ' || g, 'UTF8')), 'doc ' || g FROM generate_series(1, 3) g;
-- Legacy inheritance partitioning: a rule routes inserts into the child.
CREATE TABLE app.parent (id int, v text);
CREATE TABLE app.child1 () INHERITS (app.parent);
INSERT INTO app.child1 VALUES (1, 'one');
CREATE RULE route_to_child AS ON INSERT TO app.parent DO INSTEAD INSERT INTO app.child1 VALUES (NEW.*);
CREATE AGGREGATE app.int_total(int) (SFUNC = int4pl, STYPE = int);
CREATE TABLE app.st (a int, b int);
INSERT INTO app.st SELECT g % 10, g % 10 FROM generate_series(1, 100) g;
CREATE STATISTICS app.st_ab ON a, b FROM app.st;
CREATE COLLATION app.c_order (locale = 'C');
CREATE TEXT SEARCH DICTIONARY app.plain_dict (TEMPLATE = pg_catalog.simple);
CREATE TEXT SEARCH CONFIGURATION app.doc_search (COPY = pg_catalog.english);
CREATE TYPE app.pair AS (x int);
CREATE FUNCTION app.to_pair(int) RETURNS app.pair LANGUAGE sql IMMUTABLE AS 'SELECT ROW($1)::app.pair';
CREATE CAST (int AS app.pair) WITH FUNCTION app.to_pair(int);
CREATE FUNCTION app.before(int, int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 < $2';
CREATE OPERATOR app.<<< (LEFTARG = int, RIGHTARG = int, FUNCTION = app.before);
CREATE OPERATOR FAMILY app.pair_ops USING btree;
CREATE CONVERSION app.latin_to_utf8 FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;
CREATE EXTENSION postgres_fdw;
CREATE SERVER remote_db FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db.example', dbname 'sales');
CREATE USER MAPPING FOR postgres SERVER remote_db OPTIONS (user 'reader');
CREATE FOREIGN TABLE app.remote_orders (id int) SERVER remote_db;
CREATE MATERIALIZED VIEW app.doc_names AS SELECT name FROM app.doc WITH NO DATA;
CREATE VIEW app.doc_view AS SELECT id, name FROM app.doc;
CREATE DOMAIN app.positive AS int CHECK (VALUE > 0);
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE "My Schema"."Odd ""name"" % ü" (id int PRIMARY KEY, m app.mood, p app.positive);
CREATE TABLE app.a_name_of_exactly_sixty_three_bytes_xxxxxxxxxxxxxxxxxxxxxxxxxxx (a text);  -- no key
CREATE TABLE app.measure (id int, k int) PARTITION BY RANGE (k);
CREATE TABLE app.measure_low PARTITION OF app.measure FOR VALUES FROM (0) TO (10);
CREATE SEQUENCE app.legacy_seq;
CREATE TABLE app.legacy (id int DEFAULT nextval('app.legacy_seq'));
CREATE PUBLICATION doc_changes FOR TABLE app.doc;
COMMENT ON AGGREGATE app.int_total(int) IS 'a total';
