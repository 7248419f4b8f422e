-- Fraud labels that became known in one interval of label time (chargebacks, and transactions confirmed
-- legitimate once matured), from their own table; the labels task binds the interval start and end.
-- Load it with: python -m ml_ops.local.sim fraud ... --labels-table transaction_labels
SELECT transaction_id, is_fraud, labelled_at
FROM transaction_labels
WHERE labelled_at >= :start AND labelled_at < :end
ORDER BY labelled_at, transaction_id
