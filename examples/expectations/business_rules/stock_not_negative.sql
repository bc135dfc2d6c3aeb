-- No product has negative stock (rows returned are violations).
SELECT id, sku, stock FROM public.products WHERE stock < 0 ORDER BY id;
