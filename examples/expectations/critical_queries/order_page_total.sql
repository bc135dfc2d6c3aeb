-- The order page computes its total with the application's SQL function.
-- max_ms: 500
-- min_rows: 1
SELECT public.order_item_total(o.id) AS total FROM public.orders o WHERE o.id = 1;
