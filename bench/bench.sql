-- A scaled e-commerce database for benchmarks: psql -v scale=N (N=2 is about 2.4 GB: 19M rows, 5 tables,
-- 11 indexes, 4 foreign keys). Keys and indexes are added after the data, as pg_restore does.
CREATE UNLOGGED TABLE customers (id bigint NOT NULL, email text NOT NULL, name text NOT NULL, country char(2) NOT NULL,
                                 created_at timestamptz NOT NULL);
CREATE UNLOGGED TABLE products (id int NOT NULL, sku text NOT NULL, price numeric(10, 2) NOT NULL, stock int NOT NULL);
CREATE UNLOGGED TABLE orders (id bigint NOT NULL, customer_id bigint NOT NULL, status text NOT NULL,
                              total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL);
CREATE UNLOGGED TABLE order_items (order_id bigint NOT NULL, line_no int NOT NULL, product_id int NOT NULL,
                                   quantity int NOT NULL, unit_price numeric(10, 2) NOT NULL);
CREATE UNLOGGED TABLE payments (id bigint NOT NULL, order_id bigint NOT NULL, amount numeric(12, 2), method text,
                                paid_at timestamptz);

INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'Customer ' || g, 'TW', now() - make_interval(secs => g)
FROM generate_series(1, 200000 * :scale) g;
INSERT INTO products SELECT g, 'SKU-' || g, (g % 500) + 0.99, g % 200 FROM generate_series(1, 20000) g;
INSERT INTO orders SELECT g, 1 + (g::bigint * 7919) % (200000 * :scale), (ARRAY['paid', 'shipped', 'pending'])[1 + g % 3],
       (g % 1000) + 0.5, now() - make_interval(secs => 2000000 * :scale - g)
FROM generate_series(1, 2000000 * :scale) g;
INSERT INTO order_items SELECT o, l, 1 + (o::bigint * 31 + l) % 20000, 1 + l, 9.99
FROM generate_series(1, 2000000 * :scale) o, generate_series(1, 3) l;
INSERT INTO payments SELECT g, g, (g % 1000) + 0.5, 'card', now() - make_interval(secs => 2000000 * :scale - g)
FROM generate_series(1, 1300000 * :scale) g;

ALTER TABLE customers SET LOGGED;
ALTER TABLE products SET LOGGED;
ALTER TABLE orders SET LOGGED;
ALTER TABLE order_items SET LOGGED;
ALTER TABLE payments SET LOGGED;
ALTER TABLE customers ADD PRIMARY KEY (id), ADD UNIQUE (email);
ALTER TABLE products ADD PRIMARY KEY (id), ADD UNIQUE (sku);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE order_items ADD PRIMARY KEY (order_id, line_no);
ALTER TABLE payments ADD PRIMARY KEY (id);
CREATE INDEX ON orders (customer_id, created_at);
CREATE INDEX ON order_items (product_id);
CREATE INDEX ON payments (order_id);
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers;
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders;
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products;
ALTER TABLE payments ADD FOREIGN KEY (order_id) REFERENCES orders;
ANALYZE;
