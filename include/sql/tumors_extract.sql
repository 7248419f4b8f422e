-- One data interval of tumour measurements (sklearn's breast-cancer data spread over days).
SELECT *
FROM tumors
WHERE observed_at >= :start AND observed_at < :end
ORDER BY observed_at, sample_id
