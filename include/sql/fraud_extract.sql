-- One data interval of card transactions; the extract task binds the interval start and end.
-- No label here: chargebacks arrive later in their own table (sql/fraud_labels.sql, the labels task).
SELECT transaction_id, ts, customer_id, amount, merchant_category, channel, country, device,
       customer_age, account_age_days
FROM transactions
WHERE ts >= :start AND ts < :end
ORDER BY ts, transaction_id
