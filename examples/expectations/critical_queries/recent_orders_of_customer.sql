-- The order history page: a customer's latest orders.
-- max_ms: 500
-- min_rows: 1
SELECT o.id, o.status, o.total, o.created_at
FROM public.orders o
WHERE o.customer_id = 42
ORDER BY o.created_at DESC
LIMIT 20;
