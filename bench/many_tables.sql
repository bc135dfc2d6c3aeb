-- 1,000 small tables and 2,000 foreign keys: 500 parents, 500 children each referencing 4 parents.
DO $$
BEGIN
  FOR i IN 1..500 LOOP
    EXECUTE format('CREATE TABLE p%s (id int PRIMARY KEY, name text NOT NULL)', i);
    EXECUTE format('INSERT INTO p%s SELECT g, ''n'' || g FROM generate_series(1, 100) g', i);
  END LOOP;
  FOR i IN 1..500 LOOP
    EXECUTE format('CREATE TABLE c%s (id serial PRIMARY KEY, a int REFERENCES p%s, b int REFERENCES p%s,'
                   ' c int REFERENCES p%s, d int REFERENCES p%s, v numeric)',
                   i, i, 1 + i % 500, 1 + (i + 7) % 500, 1 + (i + 13) % 500);
    EXECUTE format('INSERT INTO c%s (a, b, c, d, v) SELECT 1 + g %% 100, 1 + (g * 3) %% 100, 1 + (g * 7) %% 100,'
                   ' 1 + (g * 11) %% 100, g * 1.5 FROM generate_series(1, 200) g', i);
  END LOOP;
END $$;
ANALYZE;
