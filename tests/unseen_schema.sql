-- A database the project has never seen: quoted and mixed-case names, a schema of its own, composite keys with
-- MATCH SIMPLE and MATCH FULL, a partitioned table, expression/partial/NULLS NOT DISTINCT unique indexes,
-- identity and serial columns, floats, arrays, jsonb, bytea and intervals.
CREATE SCHEMA "Lending";
CREATE TABLE "Lending"."Branch" (region text, code int, name text NOT NULL, PRIMARY KEY (region, code));
CREATE TABLE "Lending".book (
    isbn text PRIMARY KEY, title text NOT NULL, published date, price float8, tags text[], meta jsonb,
    cover bytea, loan_period interval DEFAULT '14 days'
);
CREATE UNIQUE INDEX book_title_once ON "Lending".book (lower(title)) WHERE published IS NOT NULL;
CREATE INDEX book_tags ON "Lending".book USING gin (tags);
CREATE TABLE "Lending"."Copy" (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    isbn text NOT NULL REFERENCES "Lending".book,
    region text, code int,
    FOREIGN KEY (region, code) REFERENCES "Lending"."Branch" MATCH SIMPLE
);
CREATE TABLE "Lending".loan (
    copy_id int NOT NULL, member text NOT NULL, due date NOT NULL, region text, code int,
    FOREIGN KEY (region, code) REFERENCES "Lending"."Branch" MATCH FULL
) PARTITION BY RANGE (due);
CREATE TABLE "Lending".loan_2025 PARTITION OF "Lending".loan FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "Lending".loan_2026 PARTITION OF "Lending".loan FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public."Weird Table" ("Id" serial PRIMARY KEY, "select" text, UNIQUE NULLS NOT DISTINCT ("select"));

INSERT INTO "Lending"."Branch" SELECT r, c, r || '-' || c FROM unnest(ARRAY['north', 'south']) r, generate_series(1, 5) c;
INSERT INTO "Lending".book
SELECT 'isbn-' || g, 'Title ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE date '2000-01-01' + g END, g * 1.1,
       ARRAY['t' || g % 3], jsonb_build_object('g', g), decode(md5(g::text), 'hex'), make_interval(days => g % 30)
FROM generate_series(1, 3000) g;
-- Copies at no branch (NULL region): MATCH SIMPLE says these are not orphans.
INSERT INTO "Lending"."Copy" (isbn, region, code)
SELECT 'isbn-' || (1 + g % 3000), CASE WHEN g % 10 = 0 THEN NULL ELSE (ARRAY['north', 'south'])[1 + g % 2] END,
       1 + g % 5
FROM generate_series(1, 8000) g;
INSERT INTO "Lending".loan SELECT 1 + g % 8000, 'member' || g % 400, date '2025-06-01' + g % 400,
       (ARRAY['north', 'south'])[1 + g % 2], 1 + g % 5
FROM generate_series(1, 6000) g;
INSERT INTO public."Weird Table" ("select") SELECT 'value ' || g FROM generate_series(1, 50) g;
INSERT INTO public."Weird Table" ("select") VALUES (NULL);
