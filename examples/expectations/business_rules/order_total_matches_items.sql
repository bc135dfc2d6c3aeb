-- An order's total is the sum of its items (rows returned are violations).
SELECT o.id, o.total, coalesce(sum(i.quantity * i.unit_price), 0) AS items_total
FROM public.orders o LEFT JOIN public.order_items i ON i.order_id = o.id
GROUP BY o.id, o.total
HAVING o.total <> coalesce(sum(i.quantity * i.unit_price), 0)
ORDER BY o.id;
