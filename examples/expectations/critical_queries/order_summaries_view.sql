-- The back-office list reads the order_summaries view.
-- max_ms: 2000
-- min_rows: 1
SELECT * FROM public.order_summaries ORDER BY created_at DESC LIMIT 50;
