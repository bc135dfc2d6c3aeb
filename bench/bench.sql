-- A scaled e-commerce database for benchmarks: psql -v scale=N (N=1 is about 1.2 GB, 9.5M rows).
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
                        country char(2) NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL UNIQUE, price numeric(10, 2) NOT NULL, stock int NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
                     status text NOT NULL, total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders, line_no int NOT NULL,
                          product_id int NOT NULL REFERENCES products, quantity int NOT NULL,
                          unit_price numeric(10, 2) NOT NULL, PRIMARY KEY (order_id, line_no));
CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders, amount numeric(12, 2),
                       method text, paid_at timestamptz);
CREATE INDEX ON orders (customer_id, created_at);
CREATE INDEX ON order_items (product_id);

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
ANALYZE;
