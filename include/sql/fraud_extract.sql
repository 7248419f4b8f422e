-- One data interval of card transactions; the extract task binds the interval start and end.
SELECT transaction_id, ts, customer_id, amount, merchant_category, channel, country, device,
       customer_age, account_age_days, is_fraud, label_available_at
FROM transactions
WHERE ts >= :start AND ts < :end
ORDER BY ts, transaction_id
