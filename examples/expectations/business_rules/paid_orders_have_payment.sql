-- Every paid or shipped order has a payment of its full total (rows returned are violations).
SELECT o.id, o.status, o.total, p.amount
FROM public.orders o LEFT JOIN public.payments p ON p.order_id = o.id
WHERE o.status IN ('paid', 'shipped') AND (p.amount IS NULL OR p.amount <> o.total)
ORDER BY o.id;
